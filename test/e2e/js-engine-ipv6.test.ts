/**
 * IPv6 in the js engine, end to end (root only): two lab namespaces joined by a veth with
 * IPv4 and IPv6 underlay addresses, each running the js engine with EngineOptions.ipv6
 * through fixtures/js-engine6.js (no control plane: routes given directly). Once over the
 * IPv4 underlay and once over the IPv6 underlay (udp6 socket, Route6.publicIpv6):
 * - no RS/MLD/NDP/DAD: nothing is read from either TUN before the first test packet;
 * - ping6 between the TUN addresses; a TCP transfer over IPv6 each way, sha256 compared;
 * - hop limit 1 => ICMPv6 time exceeded (drop_ttl); an unleased address => destination
 *   unreachable (drop_no_route); node B's TUN MTU is smaller than A's: a large ping from A
 *   is answered by B with packet too big over the tunnel (drop_too_big) and the retry,
 *   fragmented by A's kernel to the learnt MTU, succeeds.
 * Then, with B's engine stopped, crafted datagrams from B's underlay address check A's
 * inbound rules: accepted, drop_spoofed, drop_wrong_dst, drop_malformed, drop_unknown_peer,
 * drop_ttl (and the counters are exactly those).
 * Every wait is bounded; nothing asserts a speed.
 */
import t from 'tap';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { spawn, type ChildProcessByStdio } from 'node:child_process';
import type { Readable, Writable } from 'node:stream';
import { isRoot } from '../helpers/exec';
import { NetnsSet } from '../../src/lab/netns';
import type { EngineCounters } from '../../src/dataplane/engine';
import { buildIpv4 } from '../helpers/packets';
import { buildIpv6, icmp6Echo } from '../helpers/packets6';

const FIXTURE = path.resolve(__dirname, 'fixtures', 'js-engine6.js');
const PORT = 8285;
const NET6 = 'fd00:10:244::/48';
const A6 = 'fd00:10:244:1::', B6 = 'fd00:10:244:2::', UNLEASED6 = 'fd00:10:244:99::1';
const UNDER4 = ['10.99.0.1', '10.99.0.2'] as const;
const UNDER6 = ['fd99::1', 'fd99::2'] as const;
const UNDERLAY_MTU = 1500;
const B_MTU = 1300;

interface Node {
  child: ChildProcessByStdio<Writable, Readable, Readable>;
  lines: string[];
  stderr: string;
  exited: Promise<number | null>;
}

async function waitLine(n: Node, re: RegExp, after: number, timeoutMs: number): Promise<string | undefined> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    const hit = n.lines.slice(after).find((l) => re.test(l));
    if (hit !== undefined) return hit;
    if (n.child.exitCode !== null) return undefined;
    await new Promise((r) => setTimeout(r, 50));
  }
  return undefined;
}

async function counters(n: Node): Promise<EngineCounters> {
  const after = n.lines.length;
  n.child.stdin.write('counters\n');
  const line = await waitLine(n, /^COUNTERS /, after, 15_000);
  if (line === undefined) throw new Error(`no counters from the fixture: ${n.stderr}`);
  return JSON.parse(line.slice('COUNTERS '.length)) as EngineCounters;
}

if (!isRoot) {
  t.skip('SKIP: e2e IPv6 js engine test needs root (network namespaces, TUN devices)', () => undefined);
} else {
  const netns = new NetnsSet('ov6');
  t.teardown(() => netns.cleanup());
  const nsA = netns.add('a');
  const nsB = netns.add('b');
  netns.ip(nsA, 'link', 'add', 'ua', 'type', 'veth', 'peer', 'name', 'ub', 'netns', nsB);
  for (const [ns, dev, i] of [[nsA, 'ua', 0], [nsB, 'ub', 1]] as const) {
    netns.ip(ns, 'addr', 'add', `${UNDER4[i]}/24`, 'dev', dev);
    netns.ip(ns, '-6', 'addr', 'add', `${UNDER6[i]}/64`, 'dev', dev, 'nodad');
    netns.ip(ns, 'link', 'set', dev, 'mtu', String(UNDERLAY_MTU), 'up');
  }

  const start = async (ns: string, spec: object): Promise<Node> => {
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, FIXTURE, JSON.stringify(spec)], { stdio: ['pipe', 'pipe', 'pipe'] });
    const n: Node = { child, lines: [], stderr: '', exited: new Promise((r) => child.on('exit', (code) => r(code))) };
    readline.createInterface({ input: child.stdout }).on('line', (l) => n.lines.push(l));
    child.stderr.on('data', (d: Buffer) => { n.stderr += d.toString(); });
    if (await waitLine(n, /^READY$/, 0, 30_000) === undefined) {
      child.kill('SIGKILL');
      throw new Error(`fixture in ${ns} did not start: ${n.stderr}`);
    }
    return n;
  };
  const stop = async (n: Node): Promise<number | null> => {
    n.child.kill('SIGTERM');
    const timer = setTimeout(() => n.child.kill('SIGKILL'), 15_000);
    const code = await n.exited;
    clearTimeout(timer);
    return code;
  };
  const ping = (ns: string, args: string[]): string => netns.tryExec(ns, 'ping', ['-6', '-n', ...args], 30_000).stdout;
  const received = (out: string): number => Number(/(\d+) received/.exec(out)?.[1] ?? -1);
  /** One TCP stream of `bytes` pseudo-random bytes, receiver in `to`, prints sha256 both ends. */
  const tcp = async (from: string, to: string, toAddr: string, port: number, bytes: number): Promise<{ sent: string; got: string }> => {
    const serverSrc = `const c=require('crypto'),h=c.createHash('sha256');let n=0;const s=require('net').createServer((k)=>{k.on('data',(d)=>{n+=d.length;h.update(d)});k.on('end',()=>{process.stdout.write(n+' '+h.digest('hex'));s.close()})});s.listen(${port},'::',()=>process.stderr.write('listening\\n'));setTimeout(()=>process.exit(3),90000).unref()`;
    const clientSrc = `const c=require('crypto'),h=c.createHash('sha256');const k=require('net').connect(${port},'${toAddr}',async()=>{let left=${bytes};while(left>0){const b=c.randomBytes(Math.min(left,65536));h.update(b);left-=b.length;if(!k.write(b))await new Promise((r)=>k.once('drain',r))}k.end(()=>process.stdout.write(${bytes}+' '+h.digest('hex')))});k.on('error',(e)=>{process.stderr.write(String(e));process.exit(2)});setTimeout(()=>process.exit(3),90000).unref()`;
    const server = spawn('ip', ['netns', 'exec', to, process.execPath, '-e', serverSrc], { stdio: ['ignore', 'pipe', 'pipe'] });
    let got = '';
    server.stdout.on('data', (d: Buffer) => { got += d.toString(); });
    const serverDone = new Promise<void>((r) => server.on('exit', () => r()));
    await new Promise<void>((resolve) => {
      const timer = setTimeout(resolve, 30_000);
      server.stderr.on('data', (d: Buffer) => { if (d.toString().includes('listening')) { clearTimeout(timer); resolve(); } });
    });
    const out = netns.tryExec(from, process.execPath, ['-e', clientSrc], 100_000);
    const timer = setTimeout(() => server.kill('SIGKILL'), 30_000);
    await serverDone;
    clearTimeout(timer);
    return { sent: out.stdout.trim(), got: got.trim() };
  };

  for (const underlay of ['ipv4', 'ipv6'] as const) {
    t.test(`inner IPv6 over the ${underlay} underlay`, async (t) => {
      const v6u = underlay === 'ipv6';
      const mtuA = UNDERLAY_MTU - (v6u ? 48 : 28);
      const base = { tun: 'ov6tun', port: PORT, network: '10.244.0.0/16', network6: NET6 };
      // over the IPv6 underlay the Route6's IPv4 address is one nobody holds: only the udp6 path can work
      const peer6 = (i: 0 | 1) => (v6u ? { publicIp: '10.99.0.77', publicIpv6: UNDER6[i] } : {});
      const a = await start(nsA, {
        ...base, mtu: mtuA, subnet: '10.244.1.0/24', publicIp: UNDER4[0], subnet6: `${A6}/64`, ...(v6u ? { bind6: UNDER6[0] } : {}),
        routes: [{ subnet: '10.244.2.0/24', publicIp: UNDER4[1] }], routes6: [{ subnet: `${B6}/64`, publicIp: UNDER4[1], ...peer6(1) }],
      });
      const b = await start(nsB, {
        ...base, mtu: B_MTU, subnet: '10.244.2.0/24', publicIp: UNDER4[1], subnet6: `${B6}/64`, ...(v6u ? { bind6: UNDER6[1] } : {}),
        routes: [{ subnet: '10.244.1.0/24', publicIp: UNDER4[0] }], routes6: [{ subnet: `${A6}/64`, publicIp: UNDER4[0], ...peer6(0) }],
      });
      t.teardown(async () => { await stop(a); await stop(b); });

      // link-local chatter (RS after ~1 s, MLD reports, DAD) would show up as tun_rx by now
      await new Promise((r) => setTimeout(r, 3000));
      t.equal((await counters(a)).tun_rx, 0, 'nothing read from TUN A before any traffic (no RS/MLD/NDP)');
      t.equal((await counters(b)).tun_rx, 0, 'nothing read from TUN B before any traffic');
      t.match(netns.ip(nsA, '-6', 'addr', 'show', 'dev', 'ov6tun'), new RegExp(`inet6 ${A6}/128`), 'TUN A has its /128');
      t.notMatch(netns.ip(nsA, '-6', 'addr', 'show', 'dev', 'ov6tun'), /fe80:/, 'and no link-local address');
      t.match(netns.ip(nsA, '-6', 'route', 'show', NET6), /dev ov6tun/, 'IPv6Network routed into the TUN');
      const udp6 = netns.exec(nsA, 'ss', ['-uan6']);
      if (v6u) t.match(udp6, new RegExp(`\\[${UNDER6[0]}\\]:${PORT}`), 'udp6 socket bound to the IPv6 underlay address');
      else t.notMatch(udp6, new RegExp(`:${PORT}\\b`), 'no udp6 socket without an IPv6 underlay');

      const p = ping(nsA, ['-c', '3', '-i', '0.3', '-W', '5', B6]);
      t.equal(received(p), 3, `ping6 A -> B: ${p.split('\n').slice(-3).join(' ')}`);
      const p2 = ping(nsB, ['-c', '2', '-i', '0.3', '-W', '5', A6]);
      t.equal(received(p2), 2, 'ping6 B -> A');
      const ca = await counters(a);
      t.ok(ca.tx >= 3 && ca.rx >= 5, `A sent and received datagrams (tx ${ca.tx}, rx ${ca.rx})`);

      for (const [from, to, addr, port] of [[nsA, nsB, B6, 7001], [nsB, nsA, A6, 7002]] as const) {
        const r = await tcp(from, to, addr, port, 4 * 1024 * 1024);
        t.match(r.sent, /^4194304 [0-9a-f]{64}$/, `TCP ${from === nsA ? 'A -> B' : 'B -> A'}: sender finished`);
        t.equal(r.got, r.sent, 'receiver got the same bytes (sha256)');
      }

      const before = await counters(a);
      const hop = ping(nsA, ['-c', '1', '-t', '1', '-W', '5', B6]);
      t.match(hop, new RegExp(`From ${A6} icmp_seq=1 Time exceeded: Hop limit`), 'hop limit 1: time exceeded from the TUN address');
      const unr = ping(nsA, ['-c', '1', '-W', '5', UNLEASED6]);
      t.match(unr, new RegExp(`From ${A6} icmp_seq=1 Destination unreachable: No route`), 'unleased address: destination unreachable');
      const after = await counters(a);
      t.equal(after.drop_ttl - before.drop_ttl, 1, 'drop_ttl');
      t.equal(after.drop_no_route - before.drop_no_route, 1, 'drop_no_route');
      t.equal(after.icmp_sent - before.icmp_sent, 2, 'icmp_sent');

      // path MTU: B's TUN MTU is smaller; B answers packet too big through the tunnel
      const bBefore = await counters(b);
      const big = ping(nsA, ['-c', '3', '-i', '0.5', '-W', '5', '-s', '1400', B6]);
      t.match(big, new RegExp(`From ${B6} icmp_seq=1 Packet too big: mtu=${B_MTU}`), 'packet too big from B with its MTU');
      t.equal(received(big), 2, 'the retries, fragmented to the learnt MTU, succeed');
      const bAfter = await counters(b);
      t.equal(bAfter.drop_too_big - bBefore.drop_too_big, 1, 'B: drop_too_big');
      t.equal(bAfter.icmp_sent - bBefore.icmp_sent, 1, 'B: icmp_sent');
      for (const c of [after, bAfter]) {
        t.equal(c.drop_malformed + c.drop_unknown_peer + c.drop_spoofed + c.drop_wrong_dst + c.tx_error, 0, 'no unexpected drops');
      }
      // inbound rules at A, with crafted datagrams from B's underlay address (B's engine stopped: the port is free)
      t.equal(await stop(b), 0, 'B stops cleanly');
      const peerSrc = 'fd00:10:244:2::5';
      const echo = (src: string, dst: string, hop = 64) => buildIpv6({ src, dst, proto: 58, hopLimit: hop, payload: icmp6Echo(src, dst, Buffer.alloc(8, 1)) }).toString('hex');
      const good = echo(peerSrc, A6);
      const truncated = buildIpv6({ src: peerSrc, dst: A6, next: 0, payload: Buffer.from([58, 3, 0, 0, 0, 0, 0, 0]) }).toString('hex');
      const send = (family: 'udp4' | 'udp6', bindIp: string, bindPort: number, dst: string, hexes: string[]) => {
        const src = `const s=require('dgram').createSocket('${family}');setTimeout(()=>process.exit(3),10000).unref();s.bind(${bindPort},'${bindIp}',async()=>{for(const h of process.argv.slice(1))await new Promise((r,j)=>s.send(Buffer.from(h,'hex'),${PORT},'${dst}',(e)=>e?j(e):r()));s.close()})`;
        const r = netns.tryExec(nsB, process.execPath, ['-e', src, ...hexes], 20_000);
        t.equal(r.status, 0, `sent ${hexes.length} datagram(s) from ${bindIp}:${bindPort}: ${r.stderr}`);
      };
      const [fam, from, to] = v6u ? ['udp6', UNDER6[1], UNDER6[0]] as const : ['udp4', UNDER4[1], UNDER4[0]] as const;
      const c0 = await counters(a);
      send(fam, from, PORT, to, [good, echo('fd00:10:244:7::1', A6), echo(peerSrc, 'fd00:10:244:2::9'), truncated, echo(peerSrc, A6, 1)]);
      send(fam, from, 9999, to, [good]);
      const want = { rx: 6, drop_spoofed: 1, drop_wrong_dst: 1, drop_malformed: 1, drop_unknown_peer: 1, drop_ttl: 1 };
      let c1 = c0;
      for (let i = 0; i < 100 && c1.rx - c0.rx < want.rx; i++) {
        await new Promise((r) => setTimeout(r, 100));
        c1 = await counters(a);
      }
      for (const [k, v] of Object.entries(want)) t.equal(c1[k as keyof EngineCounters] - c0[k as keyof EngineCounters], v, `inbound: ${k} +${v}`);
      t.ok(c1.tun_tx - c0.tun_tx >= 2, 'the good packet and the time-exceeded error went into TUN A');
      if (v6u) {
        // inner IPv4 never rides the IPv6 underlay; inner IPv6 over IPv4 from an address the Route6 does not name is spoofed
        const v4inner = buildIpv4({ src: 0x0af40205, dst: 0x0af40101, payload: Buffer.alloc(8) }).toString('hex');
        const d0 = await counters(a);
        send('udp6', UNDER6[1], PORT, UNDER6[0], [v4inner]);
        send('udp4', UNDER4[1], PORT, UNDER4[0], [good]);
        let d1 = d0;
        for (let i = 0; i < 100 && d1.rx - d0.rx < 2; i++) {
          await new Promise((r) => setTimeout(r, 100));
          d1 = await counters(a);
        }
        // both are drop_spoofed, as in the native engine: 2 in all
        t.equal(d1.drop_spoofed - d0.drop_spoofed, 2, 'inner IPv4 over the IPv6 underlay, and inner IPv6 from the peer\'s IPv4 address when its Route6 names another: drop_spoofed');
        t.equal(d1.drop_malformed - d0.drop_malformed, 0, 'neither is drop_malformed');
      }
      t.equal(await stop(a), 0, 'A stops cleanly');
    });
  }
}
