/**
 * The native engine carrying inner IPv6 between two network namespaces (root only), driven
 * directly (fixtures/native-v6-node.js runs a NativeEngine per namespace; no etcd, no
 * daemon: the dual-stack daemon matrix is test/e2e/dual-stack*.test.ts). The namespaces
 * share a veth with 192.168.77.0/24 and fd77::/64; node A's TUN MTU is 1400, node B's 1300.
 * Shown: ping6 both ways over the IPv6 underlay (UDP6 datagrams counted by each namespace's
 * kernel), IPv4 unchanged beside it, and path MTU discovery end to end: a 1,348-byte IPv6
 * packet from A is too big for B's TUN, B's engine answers packet too big over the
 * underlay, A's kernel learns MTU 1300, and the retry (fragmented at the source) succeeds.
 * Then with the offloads on (TUN TSO4/TSO6, UDP GSO/GRO): 16 MB of TCP over IPv6 from A to
 * B arrive intact (hashes compared), A's engine cut TSO6 super-packets from its TUN.
 */
import t, { type Test } from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';
import { isRoot } from '../helpers/exec';
import { NetnsSet } from '../helpers/netns';

const FIXTURE = path.join(__dirname, 'fixtures', 'native-v6-node.js');
const XFER = path.join(__dirname, 'fixtures', 'tcp-xfer.js');
const XFER_BYTES = 16 * 1024 * 1024;
const PORT = 8285;
const READY_MS = 60_000;
const FIXTURE_DEADLINE_MS = 170_000;

interface Node {
  ns: string;
  child: ChildProcess;
  out: string[];
}

function udp6Out(netns: NetnsSet, ns: string): number {
  const text = netns.exec(ns, 'cat', ['/proc/net/snmp6']);
  const m = /^Udp6OutDatagrams\s+(\d+)$/m.exec(text);
  return m ? Number(m[1]) : -1;
}

if (!isRoot) {
  t.skip('SKIP native IPv6 e2e: needs root (network namespaces, /dev/net/tun)', () => undefined);
} else {
  const netns = new NetnsSet('ov6n');
  const nodes: Node[] = [];

  t.teardown(() => {
    for (const n of nodes) if (n.child.exitCode === null) n.child.kill('SIGKILL');
    netns.cleanup();
  });

  function startNode(ns: string, cfg: Record<string, unknown>): Node {
    const child = spawn('ip', ['netns', 'exec', ns, process.execPath, FIXTURE, JSON.stringify(cfg)], { stdio: ['pipe', 'pipe', 'pipe'] });
    const n: Node = { ns, child, out: [] };
    let buf = '';
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      const lines = buf.split('\n');
      buf = lines.pop() ?? '';
      n.out.push(...lines);
    });
    child.stderr?.on('data', (d: Buffer) => n.out.push(`stderr: ${d.toString().trim()}`));
    nodes.push(n);
    return n;
  }

  async function waitLine(n: Node, prefix: string, ms: number): Promise<string | undefined> {
    for (const t0 = Date.now(); Date.now() - t0 < ms;) {
      const l = n.out.find((x) => x.startsWith(prefix));
      if (l !== undefined) return l;
      if (n.child.exitCode !== null && n.out.find((x) => x.startsWith(prefix)) === undefined) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    return n.out.find((x) => x.startsWith(prefix));
  }

  /** Namespaces <tag>a and <tag>b on one veth, each running an engine; undefined when one did not start. */
  async function pair(t: Test, tag: string, extra: Record<string, unknown>): Promise<{ a: Node; b: Node; nsA: string; nsB: string } | undefined> {
    const nsA = netns.add(`${tag}a`);
    const nsB = netns.add(`${tag}b`);
    netns.ip(nsA, 'link', 'add', 'ul0', 'type', 'veth', 'peer', 'name', 'ul0', 'netns', nsB);
    for (const [ns, i] of [[nsA, 1], [nsB, 2]] as const) {
      netns.ip(ns, 'addr', 'add', `192.168.77.${i}/24`, 'dev', 'ul0');
      netns.ip(ns, '-6', 'addr', 'add', `fd77::${i}/64`, 'dev', 'ul0', 'nodad');
      netns.ip(ns, 'link', 'set', 'ul0', 'up');
    }
    const base = { tun: 'ovl6t0', port: PORT, network: '10.244.0.0/16', network6: 'fd00:10:244::/56', deadlineMs: FIXTURE_DEADLINE_MS, ...extra };
    const a = startNode(nsA, {
      ...base, mtu: 1400, subnet: '10.244.1.0/24', subnet6: 'fd00:10:244:1::/64', publicIp: '192.168.77.1', publicIpv6: 'fd77::1',
      peers: [{ subnet: '10.244.2.0/24', subnet6: 'fd00:10:244:2::/64', publicIp: '192.168.77.2', publicIpv6: 'fd77::2' }],
    });
    const b = startNode(nsB, {
      ...base, mtu: 1300, subnet: '10.244.2.0/24', subnet6: 'fd00:10:244:2::/64', publicIp: '192.168.77.2', publicIpv6: 'fd77::2',
      peers: [{ subnet: '10.244.1.0/24', subnet6: 'fd00:10:244:1::/64', publicIp: '192.168.77.1', publicIpv6: 'fd77::1' }],
    });
    for (const n of [a, b]) {
      const ready = await waitLine(n, 'READY', READY_MS);
      t.ok(ready, `engine in ${n.ns} started`, { out: n.out });
      if (!ready) return undefined;
    }
    return { a, b, nsA, nsB };
  }

  /** Ends the fixtures (stdin closed) and returns their RESULT objects. */
  async function finish(t: Test, list: Node[]): Promise<Array<Record<string, Record<string, number>>>> {
    const results: Array<Record<string, Record<string, number>>> = [];
    for (const n of list) {
      n.child.stdin?.end();
      const line = await waitLine(n, 'RESULT ', 30_000);
      t.ok(line, `engine in ${n.ns} reported`, { out: n.out });
      const r = JSON.parse((line ?? 'RESULT {}').slice(7)) as Record<string, Record<string, number>> & { error?: string };
      t.notOk(r.error, 'no fixture error', { error: r.error });
      results.push(r);
    }
    return results;
  }

  t.test('two native engines, dual-stack, IPv6 underlay', async (t) => {
    const p = await pair(t, '', {});
    if (p === undefined) return;
    const { a, b, nsA, nsB } = p;

    const udp6a = udp6Out(netns, nsA), udp6b = udp6Out(netns, nsB);
    const ping6 = netns.tryExec(nsA, 'ping', ['-6', '-n', '-c', '3', '-i', '0.2', '-W', '5', '-I', 'fd00:10:244:1::', 'fd00:10:244:2::'], 60_000);
    t.equal(ping6.status, 0, 'ping6 A -> B TUN address: answered', { stdout: ping6.stdout, stderr: ping6.stderr });
    const ping6b = netns.tryExec(nsB, 'ping', ['-6', '-n', '-c', '2', '-i', '0.2', '-W', '5', '-I', 'fd00:10:244:2::', 'fd00:10:244:1::'], 60_000);
    t.equal(ping6b.status, 0, 'ping6 B -> A: answered', { stdout: ping6b.stdout });
    t.ok(udp6Out(netns, nsA) - udp6a >= 5 && udp6Out(netns, nsB) - udp6b >= 5,
      'both kernels sent the tunnel datagrams over UDP6 (the IPv6 underlay)');
    const ping4 = netns.tryExec(nsA, 'ping', ['-n', '-c', '2', '-i', '0.2', '-W', '5', '-I', '10.244.1.0', '10.244.2.0'], 60_000);
    t.equal(ping4.status, 0, 'IPv4 beside it: ping A -> B answered', { stdout: ping4.stdout });

    // path MTU: 1300 bytes of payload + 48 = 1348 > B's TUN MTU 1300 (fits A's 1400)
    const first = netns.tryExec(nsA, 'ping', ['-6', '-n', '-c', '1', '-W', '3', '-s', '1300', '-M', 'do', '-I', 'fd00:10:244:1::', 'fd00:10:244:2::'], 60_000);
    t.not(first.status, 0, 'a 1,348-byte ping6 that B cannot take is not answered', { stdout: first.stdout });
    let learned = '';
    for (const t0 = Date.now(); Date.now() - t0 < 20_000 && !/mtu 1300/.test(learned);) {
      learned = netns.tryExec(nsA, 'ip', ['-6', 'route', 'get', 'fd00:10:244:2::']).stdout;
      if (!/mtu 1300/.test(learned)) await new Promise((r) => setTimeout(r, 100));
    }
    t.match(learned, /mtu 1300/, "A's kernel learned path MTU 1300 from B's packet too big");
    const retry = netns.tryExec(nsA, 'ping', ['-6', '-n', '-c', '2', '-i', '0.2', '-W', '5', '-s', '1300', '-M', 'want', '-I', 'fd00:10:244:1::', 'fd00:10:244:2::'], 60_000);
    t.equal(retry.status, 0, 'the retry (fragmented to the learned MTU) is answered', { stdout: retry.stdout, stderr: retry.stderr });

    const results = await finish(t, [a, b]);
    const [ca, cb] = [results[0]?.['counters'] ?? {}, results[1]?.['counters'] ?? {}];
    t.ok((cb['drop_too_big'] ?? 0) >= 1 && (cb['icmp_sent'] ?? 0) >= 1, `B: drop_too_big ${cb['drop_too_big']}, icmp_sent ${cb['icmp_sent']} (the packet too big)`);
    for (const [name, c] of [['A', ca], ['B', cb]] as const)
      t.same([c['drop_malformed'], c['drop_spoofed'], c['drop_unknown_peer'], c['drop_wrong_dst']], [0, 0, 0, 0], `${name}: no malformed, spoofed, unknown-peer or wrong-destination drops`);
  });

  t.test('offloads on: TCP over IPv6 through TSO6 and UDP GSO/GRO', async (t) => {
    const p = await pair(t, 'o', { offloads: true });
    if (p === undefined) return;
    const { a, b, nsA, nsB } = p;
    const server = spawn('ip', ['netns', 'exec', nsB, process.execPath, XFER, 'serve', '5006', '120000', '::'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let got = '';
    server.stdout?.on('data', (d: Buffer) => { got += d.toString(); });
    const listening = await new Promise<boolean>((resolve) => {
      const timer = setTimeout(() => resolve(false), 30_000);
      server.stderr?.on('data', (d: Buffer) => { if (d.toString().includes('listening')) { clearTimeout(timer); resolve(true); } });
      server.on('exit', () => { clearTimeout(timer); resolve(false); });
    });
    t.ok(listening, 'TCP server listening on [::]:5006 in B');
    const client = netns.tryExec(nsA, process.execPath, [XFER, 'send', 'fd00:10:244:2::', '5006', String(XFER_BYTES), '120000'], 130_000);
    const code = await new Promise<number | null>((resolve) => {
      if (server.exitCode !== null) return resolve(server.exitCode);
      const timer = setTimeout(() => { server.kill('SIGKILL'); resolve(null); }, 30_000);
      server.on('exit', (c) => { clearTimeout(timer); resolve(c); });
    });
    const [sentN, sentHash] = client.stdout.trim().split(' ');
    const [gotN, gotHash] = got.trim().split(' ');
    t.ok(client.status === 0 && code === 0 && Number(sentN) === XFER_BYTES && Number(gotN) === XFER_BYTES && gotHash === sentHash,
      `${XFER_BYTES} bytes of TCP over IPv6 A -> B arrived intact (sha256 compared)`, { client: client.stderr, sentN, gotN });
    const [ra] = await finish(t, [a, b]);
    const offl = (ra?.['offloads'] ?? {}) as unknown as { tun?: boolean };
    const native = ra?.['native'] ?? {};
    t.ok(offl.tun, 'A: TUN offload in force', { offloads: ra?.['offloads'] });
    t.ok((native['tun_gso_reads'] ?? 0) > 0, `A: ${native['tun_gso_reads']} TUN super-packets (TSO6) cut by the engine`);
    t.ok((native['udp_gso_sends'] ?? 0) > 0, `A: ${native['udp_gso_sends']} UDP_SEGMENT sends on the IPv6 socket`);
    t.equal(ra?.['counters']?.['drop_malformed'] ?? -1, 0, 'A: no malformed drop');
  });

  t.test('the addon refuses invalid IPv6 routes and start options, naming them', async (t) => {
    const ns = netns.add('err');
    const res = netns.tryExec(ns, process.execPath, [FIXTURE, JSON.stringify({ checkErrors: true })], 60_000);
    const line = res.stdout.split('\n').find((l) => l.startsWith('RESULT '));
    t.ok(line, 'fixture reported', { stdout: res.stdout, stderr: res.stderr });
    const r = JSON.parse((line ?? 'RESULT {}').slice(7)) as Record<string, string>;
    t.match(r['length'], /^RangeError: EnginePort.setRoutes6: routes.length 10 is not a multiple of 11/);
    t.match(r['hostBits'], /^RangeError: EnginePort.setRoutes6: a route has host bits set/);
    t.match(r['len129'], /^RangeError: EnginePort.setRoutes6: route 0: len 129/);
    t.match(r['hasPeer6'], /^RangeError: EnginePort.setRoutes6: route 0: .*hasPeer6 2/);
    t.equal(r['valid'], 'accepted');
    t.match(r['tun6WithoutSubnet6'], /^TypeError: EnginePort.start: options.tunAddress6 and options.bindAddress6 need options.subnet6/);
    t.match(r['subnet6HostBits'], /^RangeError: EnginePort.start: options.subnet6 has host bits set for \/32/);
    t.match(r['subnet6Words'], /^TypeError: EnginePort.start: options.subnet6 must be a Uint32Array of 4 words/);
  });
}
