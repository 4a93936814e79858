/**
 * Behaviour of the forwarding engines on the DESIGN.md topology (root only): two nodes on a
 * veth underlay, a cni0 bridge and a pod on each, overlayd with a static route source.
 * Every engine runs the same assertions.
 */
import t from 'tap';
import { existsSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { isRoot, run } from '../helpers/exec';
import { Topology, startDaemon, stopDaemon, OVERLAYD_BIN, PORT, type DaemonHandle } from '../helpers/topology';
import { buildIcmp, buildIpv4, decodeIcmpError } from '../helpers/packets';
import { parseIp } from '../../src/net/addr';
import type { StatusCounters } from '../../src/ops/status-types';
import * as path from 'node:path';

import { ENGINES } from '../helpers/engines';
const FIXTURES = path.resolve(__dirname, 'fixtures');
const FAKE_PEER = '10.99.0.200';
const FAKE_PEER_SUBNET = '10.244.200.0/24';

/** An IPv4/UDP packet (UDP checksum 0 = none), built by the test-side builder. */
function udpPacket(src: string, dst: string, payload: Buffer, ttl = 64): Buffer {
  const udp = Buffer.alloc(8 + payload.length);
  udp.writeUInt16BE(4000, 0);
  udp.writeUInt16BE(4001, 2);
  udp.writeUInt16BE(udp.length, 4);
  payload.copy(udp, 8);
  return buildIpv4({ src: parseIp(src), dst: parseIp(dst), ttl, proto: 17, payload: udp });
}

function statusOf(topo: Topology, ns: string): { counters: StatusCounters; routes: { subnet: string; publicIp: string }[]; tun: { mtu: number } } {
  const out = topo.netns.exec(ns, process.execPath, [OVERLAYD_BIN, 'status', '--json'], 10_000);
  return JSON.parse(out) as ReturnType<typeof statusOf>;
}

function ping(topo: Topology, ns: string, dst: string, extra: string[] = []) {
  return topo.netns.tryExec(ns, 'ping', ['-n', '-c', '2', '-i', '0.2', '-W', '2', ...extra, dst], 15_000);
}

const prefixes: string[] = [];

if (!isRoot) {
  t.skip('e2e forwarding tests need root (network namespaces, TUN devices)', () => undefined);
} else {
  for (const engine of ENGINES) {
    t.test(`engine ${engine}`, async (t) => {
      const topo = new Topology({ nodes: 2, podsPerNode: 1 });
      t.teardown(() => topo.cleanup());
      prefixes.push(topo.netns.prefix);
      topo.netns.ip(topo.underlayNs, 'addr', 'add', `${FAKE_PEER}/24`, 'dev', 'br0');
      const [n1, n2] = [topo.node(1), topo.node(2)];
      const [p1, p2] = [n1.pods[0]!, n2.pods[0]!];
      // native: two forwarding threads (TUN queues, SO_REUSEPORT sockets), so that multi-queue is covered too
      const common = ['--engine', engine, ...(engine === 'native' ? ['--queues', '2'] : []), '--iface', 'eth0', '--log-level', 'info'];
      const daemons: DaemonHandle[] = [];
      t.teardown(async () => { for (const d of daemons) await stopDaemon(d); });
      daemons.push(await startDaemon(n1.ns, [...common, '--static-config', topo.staticConfig(1), '--subnet-file', path.join(topo.tmp, 'n1.env')]));
      daemons.push(await startDaemon(n2.ns, [...common, '--static-config', topo.staticConfig(2, [{ Subnet: FAKE_PEER_SUBNET, PublicIP: FAKE_PEER }]), '--subnet-file', path.join(topo.tmp, 'n2.env')]));
      const [d1] = daemons as [DaemonHandle, DaemonHandle];

      t.test('TUN configured: address /32, MTU = underlay - 28, Network routed', async (t) => {
        const link = topo.netns.ip(n1.ns, '-j', 'addr', 'show', 'dev', 'flannel0');
        const [info] = JSON.parse(link) as { mtu: number; addr_info: { family: string; local: string; prefixlen: number }[] }[];
        t.equal(info?.mtu, 1472);
        t.same(info?.addr_info.map((a) => `${a.local}/${a.prefixlen}`), ['10.244.1.0/32'], 'one IPv4 address and no IPv6 (not even link-local)');
        t.match(topo.netns.ip(n1.ns, 'route', 'show', '10.244.0.0/16'), /10\.244\.0\.0\/16 dev flannel0/);
        t.equal(topo.netns.exec(n1.ns, 'cat', ['/proc/sys/net/ipv4/conf/flannel0/accept_local']).trim(), '1');
      });

      t.test('pod-to-pod ping both ways', async (t) => {
        const a = ping(topo, p1.ns, p2.ip);
        t.equal(a.status, 0, `p1 -> p2: ${a.stdout}${a.stderr}`);
        const b = ping(topo, p2.ns, p1.ip);
        t.equal(b.status, 0, `p2 -> p1: ${b.stdout}${b.stderr}`);
        t.match(a.stdout, /2 received/);
      });

      t.test('20 MB TCP transfer pod to pod arrives intact', async (t) => {
        const bytes = 20 * 1024 * 1024;
        const server = spawn('ip', ['netns', 'exec', p2.ns, process.execPath, path.join(FIXTURES, 'tcp-xfer.js'), 'serve', '5001', '90000'], { stdio: ['ignore', 'pipe', 'pipe'] });
        let serverOut = '';
        server.stdout.on('data', (d: Buffer) => { serverOut += d.toString(); });
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('server did not listen')), 10_000);
          server.stderr.on('data', (d: Buffer) => { if (d.toString().includes('listening')) { clearTimeout(timer); resolve(); } });
        });
        const serverDone = new Promise<number | null>((resolve) => server.on('exit', (c) => resolve(c)));
        const client = topo.netns.tryExec(p1.ns, process.execPath, [path.join(FIXTURES, 'tcp-xfer.js'), 'send', p2.ip, '5001', String(bytes), '90000'], 100_000);
        t.equal(client.status, 0, client.stderr);
        t.equal(await serverDone, 0);
        const [sentN, sentHash] = client.stdout.trim().split(' ');
        const [gotN, gotHash] = serverOut.trim().split(' ');
        t.equal(Number(sentN), bytes);
        t.equal(Number(gotN), bytes, 'every byte arrived');
        t.equal(gotHash, sentHash, 'sha256 of received bytes equals sent');
      });

      t.test('MTU: the largest DF ping fits, one byte more gets frag-needed from node 1', async (t) => {
        const fits = ping(topo, p1.ns, p2.ip, ['-M', 'do', '-s', String(1472 - 28)]);
        t.equal(fits.status, 0, fits.stdout + fits.stderr);
        const tooBig = ping(topo, p1.ns, p2.ip, ['-M', 'do', '-s', String(1472 - 28 + 1)]);
        t.not(tooBig.status, 0);
        t.match(tooBig.stdout + tooBig.stderr, /Frag needed and DF set \(mtu = 1472\)|message too long, mtu=1472/i);
      });

      t.test('no lease for the destination: Destination Net Unreachable from the TUN address', async (t) => {
        const before = statusOf(topo, n1.ns).counters;
        const r = ping(topo, p1.ns, '10.244.77.5');
        t.not(r.status, 0);
        t.match(r.stdout, /From 10\.244\.1\.0 icmp_seq=\d+ Destination Net Unreachable/);
        const after = statusOf(topo, n1.ns).counters;
        t.ok((after.drops['no_route'] ?? 0) - (before.drops['no_route'] ?? 0) >= 1, 'drops no_route counted');
        t.ok(after.icmp_errors_sent - before.icmp_errors_sent >= 1, 'icmp_errors_sent counted');
      });

      t.test('TTL: expiring on the sending node gives Time to live exceeded', async (t) => {
        // the pod's kernel sends TTL 2; node 1's kernel forwards it with TTL 1; the engine may not send it on
        const r = ping(topo, p1.ns, p2.ip, ['-t', '2']);
        t.not(r.status, 0);
        t.match(r.stdout, /From 10\.244\.1\.0 icmp_seq=\d+ Time to live exceeded/);
      });

      t.test('bad datagrams are dropped, counted by reason, and forwarding goes on', async (t) => {
        const send = (bindIp: string, bindPort: number, ...pkts: Buffer[]) => {
          const r = topo.netns.tryExec(topo.underlayNs, process.execPath, [path.join(FIXTURES, 'udp-send.js'), bindIp, String(bindPort), n2.underlayIp, String(PORT), ...pkts.map((p) => p.toString('hex'))]);
          t.equal(r.status, 0, r.stderr);
        };
        const good = udpPacket('10.244.200.5', p2.ip, Buffer.from('hello'));
        const before = statusOf(topo, n2.ns).counters;
        send('10.99.0.254', PORT, good); //                       not a peer
        send(FAKE_PEER, 9999, good); //                           a peer's address, wrong port
        const truncated = good.subarray(0, 15);
        const badVersion = Buffer.from(good); badVersion[0] = 0x65;
        const longer = Buffer.concat([good, Buffer.alloc(3)]);
        send(FAKE_PEER, PORT, truncated, badVersion, longer, Buffer.from('garbage, not a packet at all')); // malformed
        send(FAKE_PEER, PORT, udpPacket('10.244.1.9', p2.ip, Buffer.from('x'))); // source inside node 1's subnet: spoofed
        send(FAKE_PEER, PORT, udpPacket('10.244.200.5', '10.244.1.2', Buffer.from('x'))); // not for node 2
        send(FAKE_PEER, PORT, good); // legitimate: forwarded into the TUN
        // poll (bounded, 30 s) until all 9 are counted
        let after = statusOf(topo, n2.ns).counters;
        for (const t0 = Date.now(); (after.packets['udp_received'] ?? 0) - (before.packets['udp_received'] ?? 0) < 9 && Date.now() - t0 < 30_000;) {
          await new Promise((r) => setTimeout(r, 50));
          after = statusOf(topo, n2.ns).counters;
        }
        const d = (k: string) => (after.drops[k] ?? 0) - (before.drops[k] ?? 0);
        const dp = (k: string) => (after.packets[k] ?? 0) - (before.packets[k] ?? 0);
        t.equal(dp('udp_received'), 9, 'all datagrams received');
        t.equal(d('unknown_peer'), 2);
        t.equal(d('malformed'), 4);
        t.equal(d('spoofed'), 1);
        t.equal(d('wrong_dst'), 1, JSON.stringify({ before, after }));
        t.equal(dp('tun_written'), 1, 'the legitimate one went into the TUN');
        const again = ping(topo, p1.ns, p2.ip);
        t.equal(again.status, 0, 'forwarding goes on');
      });

      t.test('inbound longer than the TUN MTU: with DF, fragmentation needed back to the peer over UDP', async (t) => {
        // 1,500 inner bytes from the fake peer (its datagram is fragmented on the underlay and
        // reassembled by node 2's kernel); node 2's TUN MTU is 1472
        const src = parseIp('10.244.200.5');
        /** A 1,500-byte packet from the fake peer's pod to p2 (the bytes after the IP header are not read). */
        const big = (df: boolean, proto = 17, fragOffset = 0, payload = Buffer.alloc(1480, 7)): Buffer =>
          buildIpv4({ src, dst: parseIp(p2.ip), df, proto, fragOffset, payload });
        /** Sends `pkts` from the fake peer's PORT and returns the first `want` datagrams it gets back (fewer: 15 s passed). */
        const ask = (want: number, ...pkts: Buffer[]): { from: string; msg: Buffer }[] => {
          const r = topo.netns.tryExec(topo.underlayNs, process.execPath, [path.join(FIXTURES, 'udp-ask.js'), FAKE_PEER, String(PORT), n2.underlayIp, String(PORT), String(want), '15000', ...pkts.map((p) => p.toString('hex'))], 30_000);
          t.equal(r.status, 0, r.stderr);
          return r.stdout.trim().split('\n').filter((l) => l !== '').map((l) => {
            const [from, hex] = l.split(' ');
            return { from: from ?? '', msg: Buffer.from(hex ?? '', 'hex') };
          });
        };
        const before = statusOf(topo, n2.ns).counters;
        const df = big(true);
        const [reply] = ask(1, df);
        t.equal(reply?.from, `${n2.underlayIp}:${PORT}`, 'from node 2\'s UDP port');
        const e = decodeIcmpError(reply?.msg ?? Buffer.alloc(28));
        t.match(e, { version: 4, proto: 1, df: false, type: 3, code: 4, unused: 0, mtu: 1472, ipChecksumOk: true, icmpChecksumOk: true },
          'ICMP fragmentation needed, next-hop MTU 1472, both checksums valid');
        t.equal(e.src, parseIp('10.244.2.0'), 'from node 2\'s TUN address');
        t.equal(e.dst, src, 'to the inner source');
        t.same(e.quote, df.subarray(0, 28), 'quoting the offending header and 8 bytes');
        // no answer without DF, about an ICMP error, or for a non-first fragment: the first
        // answer is the DF marker's, sent last (one peer's datagrams are handled in order)
        const icmpErr = big(true, 1, 0, Buffer.concat([buildIcmp(3, 1), Buffer.alloc(1472)]));
        const marker = big(true, 17, 0, Buffer.alloc(1480, 9));
        const [first] = ask(1, big(false), icmpErr, big(true, 6, 100), marker);
        t.same(decodeIcmpError(first?.msg ?? Buffer.alloc(28)).quote, marker.subarray(0, 28), 'the first answer is about the marker');
        let after = statusOf(topo, n2.ns).counters;
        for (const t0 = Date.now(); (after.drops['too_big'] ?? 0) - (before.drops['too_big'] ?? 0) < 5 && Date.now() - t0 < 30_000;) {
          await new Promise((r) => setTimeout(r, 50));
          after = statusOf(topo, n2.ns).counters;
        }
        t.equal((after.drops['too_big'] ?? 0) - (before.drops['too_big'] ?? 0), 5, 'drops.too_big +5');
        t.equal(after.icmp_errors_sent - before.icmp_errors_sent, 2, 'icmp_errors_sent +2');
        t.equal((after.packets['tun_written'] ?? 0) - (before.packets['tun_written'] ?? 0), 0, 'nothing into the TUN');
      });

      t.test('status reports routes and MTU', async (t) => {
        const s = statusOf(topo, n1.ns);
        t.same(s.routes.map((r) => [r.subnet, r.publicIp]), [['10.244.2.0/24', n2.underlayIp]]);
        t.equal(s.tun.mtu, 1472);
      });

      t.test('SIGTERM: exits 0, TUN and route gone', async (t) => {
        // SIGKILL only past 30 s: a clean exit that a loaded machine slows is still a clean exit
        const { code, ms } = await stopDaemon(d1, 30_000);
        t.equal(code, 0, 'exit code 0', { output: d1.output().slice(-2000) });
        t.comment(`stopped ${ms} ms after SIGTERM`);
        t.not(run('ip', ['-n', n1.ns, 'link', 'show', 'flannel0']).status, 0, 'flannel0 removed');
        t.equal(topo.netns.ip(n1.ns, 'route', 'show', '10.244.0.0/16').trim(), '', 'Network route removed');
        t.ok(existsSync(path.join(topo.tmp, 'n1.env')), 'subnet file written');
      });
    });
  }
  t.test('no namespace left behind', async (t) => {
    const names = run('ip', ['netns', 'list']).stdout.split('\n').map((l) => l.split(' ')[0] ?? '');
    t.ok(prefixes.length > 0);
    for (const prefix of prefixes) t.same(names.filter((n) => n.startsWith(`${prefix}-`)), [], `none of ${prefix}-*`);
  });
}
