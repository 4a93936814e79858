/**
 * Dual-stack end to end (issue 12), on each engine (root only). A real etcd in the underlay
 * namespace holds a dual-stack network config (EnableIPv6, IPv6Network fd00:10:244::/56,
 * IPv6SubnetLen 64); the real daemon runs on each node; pods get their addresses from the
 * subnet file, as flannel's CNI plugin would. One cluster per engine, grown in two steps:
 *   two nodes, both with an IPv6 underlay (--public-ipv6):
 *     leases, subnet files and TUN; ping6; 64 MB TCP over IPv6 each way (sha256 compared),
 *     carried by the IPv6 underlay (the nodes' kernel UDP counters: IPv6 moves, IPv4 does not);
 *     UDP datagrams of mixed sizes over IPv6
 *   then three nodes (n3 has no IPv6 underlay: inner IPv6 rides IPv4 to it, and its TUN MTU is
 *     20 bytes larger than n1's) and an IPv4-only node n4 (a lease without a v6 part, as an
 *     older flannel writes it; its daemon runs from a static IPv4 config):
 *     ping6 between every dual-stack pod pair; path MTU discovery across the overlay (n1's
 *     packet-too-big is what makes a 1,500-byte ping from n3 work; for IPv4 its fragmentation
 *     needed teaches p3 the path MTU); n4's IPv4 works and no
 *     node has a v6 route to it; every IPv6 drop reason, provoked by pods (no route, hop
 *     limit) and by datagrams crafted from a hand-written peer lease in the underlay namespace.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { isRoot, run } from '../helpers/exec';
import { ENGINES } from '../helpers/engines';
import { Topology, startDaemon, stopDaemon, OVERLAYD_BIN, PORT, CLUSTER_NETWORK, CLUSTER_NETWORK6, CLUSTER_SUBNET_LEN6, type DaemonHandle, type NodeInfo, type PodInfo } from '../helpers/topology';
import { tcpTransfer } from '../helpers/transfer';
import { udpWho } from '../helpers/udp-who';
import { buildIpv6, icmp6Echo } from '../helpers/packets6';
import { NsEtcd } from '../../src/lab/etcd-ns';
import { parsePrefix6, formatIp6 } from '../../src/net/addr6';
import { flatCounters, type StatusDoc } from '../../src/ops/status-types';

const FIXTURES = path.resolve(__dirname, 'fixtures');
const PREFIX = '/coreos.com/network';
const NETWORK_CONFIG = JSON.stringify({
  Network: CLUSTER_NETWORK, SubnetLen: 24, EnableIPv6: true, IPv6Network: CLUSTER_NETWORK6, IPv6SubnetLen: CLUSTER_SUBNET_LEN6,
  Backend: { Type: 'udp', Port: PORT },
});
/** a hand-written dual-stack lease whose addresses the underlay namespace holds: the source of crafted datagrams */
const FAKE = { ip: '10.99.0.200', ip6: 'fd99::c8', subnet: '10.244.200.0/24', subnet6: 'fd00:10:244:c8::/64', pod6: 'fd00:10:244:c8::5' };
/** the IPv4-only node's subnet (its lease is written by hand before anyone else starts) */
const N4_SUBNET = '10.244.204.0/24';
const XFER_BYTES = 64 * 1024 * 1024;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** The v6 part of a subnet file, read here (its text is part of what is checked). */
interface SubnetFile6 { text: string; mtu: number; subnet: string; subnet6: string }
function readSubnetFile(file: string): SubnetFile6 {
  const text = readFileSync(file, 'utf8');
  const v = (k: string) => new RegExp(`^${k}=(.*)$`, 'm').exec(text)?.[1] ?? '';
  const p4 = /^(\d+\.\d+\.\d+)\.\d+\/(\d+)$/.exec(v('FLANNEL_SUBNET'));
  const p6 = parsePrefix6(v('FLANNEL_IPV6_SUBNET'), false);
  return { text, mtu: Number(v('FLANNEL_MTU')), subnet: p4 ? `${p4[1]}.0/${p4[2]}` : '', subnet6: p6 ? `${formatIp6(p6.addr)}/${p6.len}` : '' };
}

/** the first address of an IPv6 prefix text ("fd00:10:244:3::/64" -> "fd00:10:244:3::") */
const net6 = (prefix: string) => prefix.split('/')[0] as string;

/** Kernel UDP datagram counters of a namespace: IPv4 (/proc/net/snmp) and IPv6 (/proc/net/snmp6). */
function udpCounters(topo: Topology, ns: string): { in4: number; out4: number; in6: number; out6: number } {
  const snmp = topo.netns.exec(ns, 'cat', ['/proc/net/snmp']).split('\n').filter((l) => l.startsWith('Udp:'));
  const names = snmp[0]?.split(/\s+/) ?? [];
  const vals = snmp[1]?.split(/\s+/) ?? [];
  const v4 = (k: string) => Number(vals[names.indexOf(k)]);
  const snmp6 = topo.netns.exec(ns, 'cat', ['/proc/net/snmp6']);
  const v6 = (k: string) => Number(new RegExp(`^${k}\\s+(\\d+)$`, 'm').exec(snmp6)?.[1]);
  return { in4: v4('InDatagrams'), out4: v4('OutDatagrams'), in6: v6('Udp6InDatagrams'), out6: v6('Udp6OutDatagrams') };
}

function statusOf(topo: Topology, node: NodeInfo): StatusDoc {
  return JSON.parse(topo.netns.exec(node.ns, process.execPath, [OVERLAYD_BIN, 'status', '--json'], 10_000)) as StatusDoc;
}
function counters(topo: Topology, node: NodeInfo): Record<string, number> {
  const c = statusOf(topo, node).counters;
  if (!c) throw new Error('status has no counters');
  return flatCounters(c);
}

function ping(topo: Topology, from: PodInfo, dst: string, extra: readonly string[] = [], count = 2) {
  return topo.netns.tryExec(from.ns, 'ping', ['-n', '-c', String(count), '-i', '0.3', '-W', '2', ...extra, dst], 30_000);
}

/** Polls (bounded) until a ping from `from` to `dst` is answered: the routes have arrived. */
async function reachable(topo: Topology, from: PodInfo, dst: string, ms = 30_000): Promise<boolean> {
  const deadline = Date.now() + ms;
  do {
    if (topo.netns.tryExec(from.ns, 'ping', ['-n', '-c', '1', '-W', '1', dst], 10_000).status === 0) return true;
    await sleep(200);
  } while (Date.now() < deadline);
  return false;
}

/** An IPv6/UDP packet (inner), hex, for the udp-send fixture. */
function udp6Hex(src: string, dst: string, size: number, hopLimit = 64): string {
  const payload = Buffer.alloc(Math.max(8, size - 40));
  payload.writeUInt16BE(4000, 0);
  payload.writeUInt16BE(4001, 2);
  payload.writeUInt16BE(payload.length, 4);
  return buildIpv6({ src, dst, hopLimit, proto: 17, payload }).toString('hex');
}

if (!isRoot) {
  t.skip('SKIP: e2e dual-stack tests need root (network namespaces, TUN devices)', () => undefined);
} else {
  const prefixes: string[] = [];
  for (const engine of ENGINES) {
    t.test(`engine ${engine}: dual-stack cluster with etcd`, async (t) => {
      const topo = new Topology({ nodes: 4, podsPerNode: 1, podsNow: false, ipv6: true, noIpv6Underlay: [3, 4], tag: 'ovd' });
      prefixes.push(topo.netns.prefix);
      t.teardown(() => topo.cleanup());
      topo.netns.ip(topo.underlayNs, 'addr', 'add', `${FAKE.ip}/24`, 'dev', 'br0');
      topo.netns.ip(topo.underlayNs, 'addr', 'add', `${FAKE.ip6}/64`, 'dev', 'br0', 'nodad');
      const etcd = new NsEtcd(topo.underlayNs, '10.99.0.254', path.join(topo.tmp, 'etcd'));
      t.teardown(() => etcd.stop());
      await etcd.start();
      const put = (k: string, v: string) => t.equal(etcd.ctl(['put', k, v]).status, 0, `etcdctl put ${k}`);
      put(`${PREFIX}/config`, NETWORK_CONFIG);
      put(`${PREFIX}/subnets/${FAKE.subnet.replace('/', '-')}&${FAKE.subnet6.replace('/', '-')}`, JSON.stringify({ PublicIP: FAKE.ip, PublicIPv6: FAKE.ip6 }));
      put(`${PREFIX}/subnets/${N4_SUBNET.replace('/', '-')}`, JSON.stringify({ PublicIP: '10.99.0.4', PublicIPv6: null }));

      const daemons: DaemonHandle[] = [];
      t.teardown(async () => { for (const d of daemons) await stopDaemon(d); });
      const files = new Map<number, SubnetFile6>();
      const startNode = async (k: number, extra: readonly string[] = []) => {
        const file = path.join(topo.tmp, `n${k}.env`);
        daemons.push(await startDaemon(topo.node(k).ns, ['--engine', engine, '--iface', 'eth0', '--etcd-endpoints', etcd.endpoint, '--subnet-file', file, ...extra], 60_000));
        const sf = readSubnetFile(file);
        files.set(k, sf);
        topo.addPods(k, sf.subnet, sf.mtu, sf.subnet6 || undefined);
      };
      const [n1, n2, n3, n4] = [topo.node(1), topo.node(2), topo.node(3), topo.node(4)];
      await startNode(1, ['--public-ipv6', n1.underlayIp6!]);
      await startNode(2, ['--public-ipv6', n2.underlayIp6!]);
      const [p1, p2] = [n1.pods[0]!, n2.pods[0]!];

      await t.test('two nodes: leases, subnet files and TUNs in flannel\'s dual-stack form', async (t) => {
        for (const [node, pub6] of [[n1, n1.underlayIp6], [n2, n2.underlayIp6]] as const) {
          const sf = files.get(node.index)!;
          t.match(node.subnet6, /^fd00:10:244:[0-9a-f:]*\/64$/, `node ${node.index}: a /64 of ${CLUSTER_NETWORK6}`);
          t.equal(sf.text, `FLANNEL_NETWORK=${CLUSTER_NETWORK}\nFLANNEL_SUBNET=${node.subnet.replace('.0/', '.1/')}\nFLANNEL_IPV6_NETWORK=${CLUSTER_NETWORK6}\n`
            + `FLANNEL_IPV6_SUBNET=${net6(node.subnet6)}1/64\nFLANNEL_MTU=1452\nFLANNEL_IPMASQ=false\n`, `node ${node.index}: subnet file (MTU = 1500 - 48: IPv6 underlay)`);
          const key = `${PREFIX}/subnets/${node.subnet.replace('/', '-')}&${node.subnet6.replace('/', '-')}`;
          t.equal(etcd.ctl(['get', key, '--print-value-only']).stdout.trim(), JSON.stringify({ PublicIP: node.underlayIp, PublicIPv6: pub6 }), `lease ${key}`);
          const [link] = JSON.parse(topo.netns.ip(node.ns, '-j', 'addr', 'show', 'dev', 'flannel0')) as { mtu: number; addr_info: { family: string; local: string; prefixlen: number }[] }[];
          t.equal(link?.mtu, 1452, 'TUN MTU 1452');
          t.same(link?.addr_info.map((a) => `${a.local}/${a.prefixlen}`).sort(), [`${net6(node.subnet6)}/128`, `${node.subnet.split('/')[0]}/32`].sort(), 'TUN: the v4 /32 and the v6 /128, no link-local');
          t.match(topo.netns.ip(node.ns, '-6', 'route', 'show', CLUSTER_NETWORK6), /dev flannel0/, 'route for IPv6Network via the TUN');
          // no link-local chatter into the tunnel. The kernel hands the TUN one or two MLDv2
          // reports (from ::, to ff02::16; its robustness retransmit) at link-up: it joins ff02::2
          // because net.ipv6.conf.all.forwarding=1. They have no route: dropped, no ICMPv6 error
          // (multicast), never sent to a peer.
          const c = counters(topo, node);
          t.equal(c['packets.tun_read'], c['drops.no_route'], `node ${node.index}: whatever was read was dropped as no_route`);
          t.equal(c['icmp_errors_sent'], 0, `node ${node.index}: no ICMPv6 error about it`);
          t.equal(c['packets.udp_sent'], 0, `node ${node.index}: nothing went to a peer (no RS/MLD/NDP into the tunnel)`);
        }
      });

      await t.test('two nodes: ping6 both ways', async (t) => {
        t.ok(await reachable(topo, p1, p2.ip6!), 'routes arrived (bounded wait)');
        for (const [a, b] of [[p1, p2], [p2, p1]] as const) {
          const r = ping(topo, a, b.ip6!);
          t.equal(r.status, 0, `${a.ip6} -> ${b.ip6}`, { output: r.stdout + r.stderr });
        }
        t.equal(ping(topo, p1, p2.ip).status, 0, 'and IPv4 beside it');
      });

      await t.test('two nodes: 64 MB TCP over IPv6 each way, intact, carried by the IPv6 underlay', async (t) => {
        const before = udpCounters(topo, n1.ns);
        let port = 5601;
        for (const [a, b] of [[p1, p2], [p2, p1]] as const) {
          const r = await tcpTransfer(a, b, port++, XFER_BYTES, 180_000, { family: 6 });
          t.ok(r.ok, `${a.ip6} -> ${b.ip6}: ${r.got} (${r.ms} ms)`, { sent: r.sent, got: r.got, stderr: r.stderr });
        }
        const after = udpCounters(topo, n1.ns);
        const d = { in4: after.in4 - before.in4, out4: after.out4 - before.out4, in6: after.in6 - before.in6, out6: after.out6 - before.out6 };
        t.comment(`node 1 kernel UDP datagrams during the transfers: ${JSON.stringify(d)}`);
        t.ok(d.out6 >= 100 && d.in6 >= 100, 'node 1 sent and received over UDP/IPv6');
        t.ok(d.out4 + d.in4 <= (d.out6 + d.in6) / 100, 'and next to nothing over UDP/IPv4');
      });

      await t.test('two nodes: UDP of mixed sizes over IPv6', async (t) => {
        const server = spawn('ip', ['netns', 'exec', p2.ns, process.execPath, path.join(FIXTURES, 'udp-echo.js'), 'serve', '5700', '60000', '::'], { stdio: ['ignore', 'ignore', 'pipe'] });
        t.teardown(() => { server.kill(); });
        await new Promise<void>((resolve, reject) => {
          const timer = setTimeout(() => reject(new Error('udp-echo did not listen within 10 s')), 10_000);
          server.stderr.on('data', (d: Buffer) => { if (d.toString().includes('listening')) { clearTimeout(timer); resolve(); } });
        });
        // 1..1404 fit one packet (pod MTU 1452 - 48); 1405 and 8000 travel as IPv6 fragments
        const sizes = [1, 64, 512, 1232, 1404, 1405, 8000];
        const r = topo.netns.tryExec(p1.ns, process.execPath, [path.join(FIXTURES, 'udp-echo.js'), 'ping', p2.ip6!, '5700', sizes.join(','), '5', '50000'], 60_000);
        t.equal(r.status, 0, r.stderr);
        t.match(r.stdout, new RegExp(`^${sizes.length * 5} ${sizes.reduce((a, b) => a + b, 0) * 5} [0-9a-f]{64}$`, 'm'), 'every datagram echoed intact');
      });

      // ---- grow: n3 (no IPv6 underlay), n4 (IPv4 only, static) ----
      await startNode(3);
      const p3 = n3.pods[0]!;
      const n4Config = path.join(topo.tmp, 'static-n4.json');
      writeFileSync(n4Config, JSON.stringify({
        Network: CLUSTER_NETWORK, SubnetLen: 24, Backend: { Type: 'udp', Port: PORT }, Subnet: N4_SUBNET, PublicIP: n4.underlayIp,
        Peers: [n1, n2, n3].map((n) => ({ Subnet: n.subnet, PublicIP: n.underlayIp })),
      }));
      daemons.push(await startDaemon(n4.ns, ['--engine', engine, '--iface', 'eth0', '--static-config', n4Config, '--subnet-file', path.join(topo.tmp, 'n4.env')], 60_000));
      topo.addPods(4, N4_SUBNET, 1472);
      const p4 = n4.pods[0]!;

      await t.test('three nodes: every dual-stack pod pair, both families; n3 rides the IPv4 underlay', async (t) => {
        const sf = files.get(3)!;
        t.match(sf.text, /^FLANNEL_IPV6_SUBNET=fd00:10:244:.*\nFLANNEL_MTU=1472$/m, 'n3: a v6 subnet, MTU 1500 - 28 (no IPv6 underlay)');
        t.equal(etcd.ctl(['get', `${PREFIX}/subnets/${n3.subnet.replace('/', '-')}&${n3.subnet6.replace('/', '-')}`, '--print-value-only']).stdout.trim(), JSON.stringify({ PublicIP: n3.underlayIp, PublicIPv6: null }));
        t.ok(await reachable(topo, p1, p3.ip6!) && await reachable(topo, p3, p2.ip6!), 'routes to and from n3 arrived (bounded wait)');
        for (const a of [p1, p2, p3]) {
          for (const b of [p1, p2, p3]) {
            if (a === b) continue;
            t.equal(ping(topo, a, b.ip6!, [], 1).status, 0, `${a.ip6} -> ${b.ip6}`);
            t.equal(ping(topo, a, b.ip, [], 1).status, 0, `${a.ip} -> ${b.ip}`);
          }
        }
        const before = udpCounters(topo, n3.ns);
        const r = await tcpTransfer(p3, p1, 5610, 16 * 1024 * 1024, 120_000, { family: 6 });
        t.ok(r.ok, `16 MB ${p3.ip6} -> ${p1.ip6}: ${r.got}`, { sent: r.sent, got: r.got, stderr: r.stderr });
        const after = udpCounters(topo, n3.ns);
        t.ok(after.out4 - before.out4 >= 100 && after.in6 === before.in6 && after.out6 === before.out6, `n3 moved it over UDP/IPv4 only (${JSON.stringify({ out4: after.out4 - before.out4, out6: after.out6 - before.out6 })})`);
      });

      await t.test('path MTU: a 1,500-byte ping6 from n3 (TUN 1472) to n1 (TUN 1452) gets n1\'s packet too big; the retry succeeds', async (t) => {
        topo.netns.tryExec(p3.ns, 'ip', ['-6', 'route', 'flush', 'cache']);
        const c0 = counters(topo, n1);
        // 1452 bytes of data + 8 ICMPv6 + 40 IPv6 = 1500; p3 (MTU 1472) sends it in fragments of up to 1472
        const r = ping(topo, p3, p1.ip6!, ['-s', '1452'], 5);
        t.match(r.stdout, new RegExp(`From ${net6(n1.subnet6)} icmp_seq=\\d+ Packet too big: mtu=1452`), 'packet too big from n1\'s TUN address', { output: r.stdout + r.stderr });
        t.match(r.stdout, /1460 bytes from .* icmp_seq=[2-5] /, 'a later one is answered');
        t.match(topo.netns.tryExec(p3.ns, 'ip', ['-6', 'route', 'get', p1.ip6!]).stdout, /mtu 1452/, 'p3 learned the path MTU');
        const c1 = counters(topo, n1);
        t.ok((c1['drops.too_big'] ?? 0) > (c0['drops.too_big'] ?? 0), 'n1 counted drops.too_big');
        t.ok((c1['icmp_errors_sent'] ?? 0) > (c0['icmp_errors_sent'] ?? 0), 'n1 counted icmp_errors_sent');
      });

      await t.test('path MTU over IPv4: a 1,472-byte DF ping from n3 (TUN 1472) to n1 (TUN 1452) gets n1\'s fragmentation needed; one that fits is answered', async (t) => {
        topo.netns.tryExec(p3.ns, 'ip', ['route', 'flush', 'cache']);
        const c0 = counters(topo, n1);
        // 1444 bytes of data + 8 ICMP + 20 IPv4 = 1472: fits p3's and n3's MTU, not n1's TUN
        const r = ping(topo, p3, p1.ip, ['-M', 'do', '-s', '1444'], 2);
        const n1Tun = n1.subnet.split('/')[0]!;
        t.match(r.stdout, new RegExp(`From ${n1Tun.replace(/\./g, '\\.')} icmp_seq=\\d+ Frag needed and DF set \\(mtu = 1452\\)`), 'fragmentation needed from n1\'s TUN address', { output: r.stdout + r.stderr });
        t.match(topo.netns.tryExec(p3.ns, 'ip', ['route', 'get', p1.ip]).stdout, /mtu 1452/, 'p3 learned the path MTU');
        const fits = ping(topo, p3, p1.ip, ['-M', 'do', '-s', '1424'], 1);
        t.equal(fits.status, 0, `1452 bytes with DF are answered: ${fits.stdout}${fits.stderr}`);
        const c1 = counters(topo, n1);
        t.ok((c1['drops.too_big'] ?? 0) > (c0['drops.too_big'] ?? 0), 'n1 counted drops.too_big');
        t.ok((c1['icmp_errors_sent'] ?? 0) > (c0['icmp_errors_sent'] ?? 0), 'n1 counted icmp_errors_sent');
      });

      await t.test('an IPv4-only node in the dual-stack network: its IPv4 works, nobody has a v6 route to it', async (t) => {
        t.ok(await reachable(topo, p4, p1.ip) && await reachable(topo, p1, p4.ip), 'p4 <-> p1 over IPv4 (bounded wait)');
        t.equal(ping(topo, p4, p3.ip).status, 0, 'p4 -> p3 over IPv4');
        for (const node of [n1, n2, n3]) {
          const st = statusOf(topo, node);
          t.ok(st.routes.some((r) => r.subnet === N4_SUBNET && r.publicIp === n4.underlayIp), `n${node.index} has the IPv4 route to n4`);
          t.notOk((st.routes6 ?? []).some((r) => r.publicIp === n4.underlayIp), `n${node.index} has no v6 route to n4`, { routes6: st.routes6 });
        }
        // and the v6 routes say which underlay each takes: IPv6 only where both ends have a PublicIPv6
        const underlays = (node: NodeInfo) => Object.fromEntries((statusOf(topo, node).routes6 ?? []).map((r) => [r.subnet, `${r.underlay} ${r.publicIpv6 ?? r.publicIp}`]));
        t.same(underlays(n1), { [n2.subnet6]: `ipv6 ${n2.underlayIp6}`, [n3.subnet6]: `ipv4 ${n3.underlayIp}`, [FAKE.subnet6]: `ipv6 ${FAKE.ip6}` }, 'n1: v6 routes and their underlays');
        t.same(underlays(n3), { [n1.subnet6]: `ipv4 ${n1.underlayIp}`, [n2.subnet6]: `ipv4 ${n2.underlayIp}`, [FAKE.subnet6]: `ipv4 ${FAKE.ip}` }, 'n3 (no PublicIPv6): every v6 route over IPv4');
      });

      await t.test('every IPv6 drop reason is counted', async (t) => {
        // pods provoke no_route and ttl: ICMPv6 errors from n1's TUN address
        const leased = new Set([n1, n2, n3].map((n) => n.subnet6).concat(FAKE.subnet6));
        let hole = '';
        for (let i = 1; i < 255 && hole === ''; i++) if (!leased.has(`fd00:10:244:${i.toString(16)}::/64`)) hole = `fd00:10:244:${i.toString(16)}::9`;
        let c0 = counters(topo, n1);
        const nr = ping(topo, p1, hole, [], 1);
        t.match(nr.stdout, new RegExp(`From ${net6(n1.subnet6)} icmp_seq=1 Destination unreachable: No route`), `no lease for ${hole}`, { output: nr.stdout });
        const hl = ping(topo, p1, p2.ip6!, ['-t', '2'], 1);
        t.match(hl.stdout, new RegExp(`From ${net6(n1.subnet6)} icmp_seq=1 Time exceeded: Hop limit`), 'hop limit 2 from the pod: expires on n1', { output: hl.stdout });
        let c1 = counters(topo, n1);
        t.equal((c1['drops.no_route'] ?? 0) - (c0['drops.no_route'] ?? 0), 1, 'drops.no_route + 1');
        t.equal((c1['drops.ttl'] ?? 0) - (c0['drops.ttl'] ?? 0), 1, 'drops.ttl + 1');
        t.equal((c1['icmp_errors_sent'] ?? 0) - (c0['icmp_errors_sent'] ?? 0), 2, 'icmp_errors_sent + 2');

        // datagrams at n1's daemon from the hand-written peer FAKE and from non-peers
        const pod1 = p1.ip6!;
        const send = (from: string, hex: string[]) => {
          const r = topo.netns.tryExec(topo.underlayNs, process.execPath, [path.join(FIXTURES, 'udp-send.js'), from, String(PORT), from.includes(':') ? n1.underlayIp6! : n1.underlayIp, String(PORT), ...hex]);
          t.equal(r.status, 0, `udp-send from ${from}: ${r.stderr}`);
        };
        const good = udp6Hex(FAKE.pod6, pod1, 100);
        const expected: Record<string, number> = { unknown_peer: 2, malformed: 2, spoofed: 1, wrong_dst: 1, ttl: 1, too_big: 1 };
        c0 = counters(topo, n1);
        send(FAKE.ip6, [
          Buffer.from(good, 'hex').subarray(0, 30).toString('hex'), // malformed: a truncated IPv6 header
          buildIpv6({ src: FAKE.pod6, dst: pod1, payload: Buffer.alloc(20), payloadLen: 60 }).toString('hex'), // malformed: payload length beyond the datagram
          udp6Hex(p2.ip6!, pod1, 100), // spoofed: the source is n2's, the sender FAKE
          udp6Hex(FAKE.pod6, p3.ip6!, 100), // wrong_dst: not in n1's subnet
          udp6Hex(FAKE.pod6, pod1, 100, 1), // ttl: hop limit 1
          udp6Hex(FAKE.pod6, pod1, 1500), // too_big: longer than n1's TUN MTU 1452
        ]);
        send('fd99::fe', [good]); // unknown_peer: not a peer's address
        send('10.99.0.254', [good]); // unknown_peer: over IPv4, not a peer either
        const reasons = Object.keys(expected);
        const delta = (r: string) => (c1[`drops.${r}`] ?? 0) - (c0[`drops.${r}`] ?? 0);
        const deadline = Date.now() + 30_000;
        do {
          await sleep(200);
          c1 = counters(topo, n1);
        } while (!reasons.every((r) => delta(r) >= expected[r]!) && Date.now() < deadline);
        for (const r of reasons) t.equal(delta(r), expected[r], `drops.${r} + ${expected[r]}`);

        // the control: a well-formed echo request from FAKE over IPv4 is delivered, and p1's reply
        // goes back to FAKE over the IPv6 underlay (both ends have a PublicIPv6)
        const who = await udpWho(topo.underlayNs, FAKE.ip6, PORT);
        send(FAKE.ip, [buildIpv6({ src: FAKE.pod6, dst: pod1, proto: 58, payload: icmp6Echo(FAKE.pod6, pod1, Buffer.from('overlayd dual-stack')) }).toString('hex')]);
        t.equal(await who.sender, n1.underlayIp6, 'the echo reply for FAKE arrived from n1 over IPv6');
      });

      await t.test('every daemon still runs', async (t) => {
        for (const d of daemons) t.equal(d.child.exitCode, null, `pid ${d.pid}`, { output: d.output().slice(-2000) });
      });
    });
  }
  t.test('no namespace left behind', async (t) => {
    const names = run('ip', ['netns', 'list']).stdout.split('\n').map((l) => l.split(' ')[0] ?? '');
    t.same(names.filter((n) => prefixes.some((p) => n.startsWith(`${p}-`))), [], `none of ${prefixes.join(', ')}`);
  });
}
