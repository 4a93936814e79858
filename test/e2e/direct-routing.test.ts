/**
 * DirectRouting (Backend.DirectRouting: true), native engine, real etcd. Three nodes: n1 and
 * n2 on one link (br0), n3 behind a router on a second underlay subnet. Same-link peers are
 * reached through kernel routes (proto 85), the routed one through the UDP tunnel; the
 * underlay traffic is counted with nftables counters in the node namespaces. Then: leases
 * moving the routes, the rp_filter guard of the routed inbound path, shutdown and a crashed
 * instance's leftovers, and a mixed pair (one side without DirectRouting, static sources).
 */
import t from 'tap';
import { readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { isRoot } from '../helpers/exec';
import { Topology, startDaemon, stopDaemon, OVERLAYD_BIN, PORT, CLUSTER_NETWORK, type DaemonHandle, type NodeInfo } from '../helpers/topology';
import { NsEtcd } from '../../src/lab/etcd-ns';
import { parseSubnetFile } from '../../src/control/subnet-file';
import { formatIp, formatPrefix, parsePrefix } from '../../src/net/addr';
import { OVERLAYD_RT_PROTO } from '../../src/net/direct-routes';

const FIXTURES = path.resolve(__dirname, 'fixtures');
const PREFIX = '/coreos.com/network';
const CONFIG = `{"Network":"${CLUSTER_NETWORK}","Backend":{"Type":"udp","DirectRouting":true}}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface StatusRoute { subnet: string; publicIp: string; via: string }

function status(topo: Topology, node: NodeInfo): { routes: StatusRoute[] } {
  return JSON.parse(topo.netns.exec(node.ns, process.execPath, [OVERLAYD_BIN, 'status', '--json'])) as { routes: StatusRoute[] };
}

/** Our kernel routes in node's namespace as "subnet via ip dev dev", sorted. */
function ourRoutes(topo: Topology, node: NodeInfo): string[] {
  const out = topo.netns.ip(node.ns, '-j', '-4', 'route', 'show', 'table', 'main', 'proto', String(OVERLAYD_RT_PROTO));
  return (JSON.parse(out) as { dst: string; gateway?: string; dev?: string }[]).map((r) => `${r.dst} via ${r.gateway ?? '-'} dev ${r.dev ?? '-'}`).sort();
}

/** Polls (bounded) until cond holds; false past the bound. */
async function until(ms: number, cond: () => boolean): Promise<boolean> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (cond()) return true;
    await sleep(100);
  }
  return cond();
}

/**
 * nftables counters on node's underlay (eth0), one set per peer J:
 * udp_to_J / udp_from_J: tunnel datagrams (UDP port PORT) to/from J's underlay address;
 * plain_to_J: packets leaving eth0 for J's pod subnet unencapsulated.
 */
function installCounters(topo: Topology, node: NodeInfo): void {
  const peers = topo.nodes.filter((n) => n !== node);
  const lines = [`table ip ovtcount`, `delete table ip ovtcount`, `table ip ovtcount {`];
  for (const p of peers) lines.push(`  counter udp_to_${p.index} {}`, `  counter udp_from_${p.index} {}`, `  counter plain_to_${p.index} {}`);
  lines.push('  chain post {', '    type filter hook postrouting priority 0; policy accept;');
  for (const p of peers) {
    lines.push(`    oifname "eth0" ip daddr ${p.underlayIp} udp dport ${PORT} counter name udp_to_${p.index}`);
    lines.push(`    oifname "eth0" ip daddr ${p.subnet} counter name plain_to_${p.index}`);
  }
  lines.push('  }', '  chain pre {', '    type filter hook prerouting priority 0; policy accept;');
  for (const p of peers) lines.push(`    iifname "eth0" ip saddr ${p.underlayIp} udp dport ${PORT} counter name udp_from_${p.index}`);
  lines.push('  }', '}', '');
  const file = path.join(topo.tmp, `count-${node.index}.nft`);
  writeFileSync(file, lines.join('\n'));
  topo.netns.exec(node.ns, 'nft', ['-f', file]);
}

function counter(topo: Topology, node: NodeInfo, name: string): number {
  const out = JSON.parse(topo.netns.exec(node.ns, 'nft', ['-j', 'list', 'counter', 'ip', 'ovtcount', name])) as { nftables: { counter?: { packets: number } }[] };
  const c = out.nftables.find((o) => o.counter !== undefined)?.counter;
  if (!c) throw new Error(`no counter ${name} in ${node.ns}`);
  return c.packets;
}

function ping(topo: Topology, from: string, to: string, extra: string[] = []) {
  return topo.netns.tryExec(from, 'ping', ['-n', '-c', '2', '-i', '0.2', '-W', '2', ...extra, to]);
}

if (!isRoot) {
  t.skip('SKIP: e2e DirectRouting tests need root (network namespaces, TUN devices, nftables)', () => undefined);
} else {
  t.test('DirectRouting', async (t) => {
    const topo = new Topology({ nodes: 3, podsPerNode: 1, podsNow: false, routed: [3], tag: 'ovd' });
    t.teardown(() => topo.cleanup());
    const etcd = new NsEtcd(topo.underlayNs, '10.99.0.254', path.join(topo.tmp, 'etcd'));
    t.teardown(() => etcd.stop());
    await etcd.start();
    t.equal(etcd.ctl(['put', `${PREFIX}/config`, CONFIG]).status, 0);

    const daemons = new Map<number, DaemonHandle>();
    t.teardown(async () => { for (const d of daemons.values()) await stopDaemon(d); });
    const args = (node: NodeInfo) => ['--engine', 'native', '--iface', 'eth0', '--etcd-endpoints', etcd.endpoint,
      '--subnet-file', path.join(topo.tmp, `n${node.index}.env`), '--log-level', 'info'];
    for (const node of topo.nodes) {
      daemons.set(node.index, await startDaemon(node.ns, args(node)));
      const file = path.join(topo.tmp, `n${node.index}.env`);
      const sf = parseSubnetFile(readFileSync(file, 'utf8'), file);
      topo.addPods(node.index, formatPrefix(sf.subnet), sf.mtu);
    }
    const [n1, n2, n3] = [topo.node(1), topo.node(2), topo.node(3)];
    const pods = topo.nodes.map((n) => n.pods[0]!);

    await t.test('same-link peers direct, the routed one over UDP; every pod reaches every pod; counted on the underlay', async (t) => {
      for (const n of topo.nodes) t.ok(await until(30_000, () => status(topo, n).routes.length === 2), `node ${n.index} has both routes`);
      const via = (n: NodeInfo) => status(topo, n).routes.map((r) => `${r.subnet} ${r.via}`).sort();
      t.same(via(n1), [`${n2.subnet} direct`, `${n3.subnet} udp`].sort(), 'n1: n2 direct, n3 udp');
      t.same(via(n2), [`${n1.subnet} direct`, `${n3.subnet} udp`].sort(), 'n2: n1 direct, n3 udp');
      t.same(via(n3), [`${n1.subnet} udp`, `${n2.subnet} udp`].sort(), 'n3 (behind the router): both udp');
      t.same(ourRoutes(topo, n1), [`${n2.subnet} via ${n2.underlayIp} dev eth0`]);
      t.same(ourRoutes(topo, n2), [`${n1.subnet} via ${n1.underlayIp} dev eth0`]);
      t.same(ourRoutes(topo, n3), []);

      for (const n of topo.nodes) installCounters(topo, n);
      for (const a of pods) {
        for (const b of pods) {
          if (a === b) continue;
          const r = ping(topo, a.ns, b.ip);
          t.equal(r.status, 0, `${a.ip} -> ${b.ip}`, { output: r.stdout });
        }
      }
      t.equal(counter(topo, n1, 'udp_to_2') + counter(topo, n1, 'udp_from_2'), 0, 'n1 <-> n2: no datagram on the tunnel port');
      t.equal(counter(topo, n2, 'udp_to_1') + counter(topo, n2, 'udp_from_1'), 0, 'n2 <-> n1: none either');
      t.ok(counter(topo, n1, 'plain_to_2') >= 4, `n1 -> n2 pods: unencapsulated on eth0 (${counter(topo, n1, 'plain_to_2')} packets)`);
      t.ok(counter(topo, n2, 'plain_to_1') >= 4, 'n2 -> n1 pods: unencapsulated on eth0');
      for (const [a, b] of [[n1, n3], [n3, n1], [n2, n3], [n3, n2]] as const) {
        t.ok(counter(topo, a, `udp_to_${b.index}`) >= 4, `n${a.index} -> n${b.index}: tunnel datagrams`);
        t.equal(counter(topo, a, `plain_to_${b.index}`), 0, `n${a.index} -> n${b.index}: nothing unencapsulated`);
      }
      const m = topo.netns.exec(n1.ns, process.execPath, [path.join(FIXTURES, 'http-get.js'), 'http://127.0.0.1:9285/metrics']).split('\n').slice(1).join('\n');
      const fam = parsePrometheusTextFormat(m).find((f) => f.name === 'overlayd_routes_by_kind');
      const kind = (k: string) => fam?.metrics.find((s) => s.labels?.['kind'] === k)?.value;
      t.equal(kind('direct'), '1', 'metric: 1 direct');
      t.equal(kind('udp'), '1', 'metric: 1 udp');
    });

    await t.test('leases added, changed and removed move the kernel routes', async (t) => {
      const key = `${PREFIX}/subnets/10.244.200.0-24`;
      const put = (pub: string) => t.equal(etcd.ctl(['put', key, `{"PublicIP":"${pub}","PublicIPv6":null}`]).status, 0, `lease -> ${pub}`);
      const has = (n: NodeInfo, r: string) => ourRoutes(topo, n).includes(r);
      const none = (n: NodeInfo) => !ourRoutes(topo, n).some((r) => r.startsWith('10.244.200.0/24'));
      put('10.99.0.77');
      t.ok(await until(30_000, () => has(n1, '10.244.200.0/24 via 10.99.0.77 dev eth0') && has(n2, '10.244.200.0/24 via 10.99.0.77 dev eth0')), 'added: on the link of n1 and n2');
      t.ok(await until(30_000, () => status(topo, n3).routes.some((r) => r.subnet === '10.244.200.0/24' && r.via === 'udp')), 'n3: a udp route');
      t.ok(none(n3), 'n3: no kernel route');
      put('10.99.0.78');
      t.ok(await until(30_000, () => has(n1, '10.244.200.0/24 via 10.99.0.78 dev eth0') && has(n2, '10.244.200.0/24 via 10.99.0.78 dev eth0')), 'changed on the link: via follows');
      t.ok(none(n3));
      put('10.99.1.77');
      t.ok(await until(30_000, () => none(n1) && none(n2) && has(n3, '10.244.200.0/24 via 10.99.1.77 dev eth0')), 'moved behind the router: n1, n2 drop it, n3 (now same link) routes it');
      t.ok(await until(30_000, () => status(topo, n1).routes.some((r) => r.subnet === '10.244.200.0/24' && r.publicIp === '10.99.1.77' && r.via === 'udp')), 'n1: udp');
      t.equal(etcd.ctl(['del', key]).status, 0);
      t.ok(await until(30_000, () => none(n1) && none(n2) && none(n3)), 'removed: gone everywhere');
      t.ok(await until(30_000, () => topo.nodes.every((n) => status(topo, n).routes.length === 2)), 'and from the engines');
    });

    await t.test('inbound routed packets: strict rp_filter drops a spoofed source from a non-peer on the link', async (t) => {
      const pod = n1.pods[0]!;
      const n3net = parsePrefix(n3.subnet);
      if (!n3net) throw new Error(n3.subnet);
      // the underlay namespace is a non-peer host on the link; it claims a pod address of n3
      const spoofed = formatIp(n3net.addr + 200);
      topo.netns.ip(topo.underlayNs, 'addr', 'add', `${spoofed}/32`, 'dev', 'lo');
      topo.netns.ip(topo.underlayNs, 'route', 'add', n1.subnet, 'via', n1.underlayIp);
      const rules = [
        'table ip ovtpod {',
        '  counter spoofed {}', '  counter legit {}',
        '  chain in { type filter hook input priority 0; policy accept;',
        `    ip saddr ${spoofed} icmp type echo-request counter name spoofed`,
        '    ip saddr 10.99.0.254 icmp type echo-request counter name legit', '  }', '}', ''].join('\n');
      const file = path.join(topo.tmp, 'pod.nft');
      writeFileSync(file, rules);
      topo.netns.exec(pod.ns, 'nft', ['-f', file]);
      const podCounter = (name: string) => (JSON.parse(topo.netns.exec(pod.ns, 'nft', ['-j', 'list', 'counter', 'ip', 'ovtpod', name])) as { nftables: { counter?: { packets: number } }[] })
        .nftables.find((o) => o.counter)?.counter?.packets ?? -1;
      const rp = (v: string) => topo.netns.exec(n1.ns, 'sysctl', ['-qw', `net.ipv4.conf.all.rp_filter=${v}`, `net.ipv4.conf.eth0.rp_filter=${v}`]);

      rp('0');
      topo.netns.tryExec(topo.underlayNs, 'ping', ['-n', '-c', '1', '-W', '1', '-I', spoofed, pod.ip]);
      t.ok(await until(5000, () => podCounter('spoofed') >= 1), 'control: with rp_filter=0 the spoofed packet reaches the pod');
      rp('1');
      const before = podCounter('spoofed');
      topo.netns.tryExec(topo.underlayNs, 'ping', ['-n', '-c', '3', '-i', '0.2', '-W', '1', '-I', spoofed, pod.ip]);
      // a legitimate packet on the same path afterwards: once it is counted, the spoofed ones had their chance
      t.equal(topo.netns.tryExec(topo.underlayNs, 'ping', ['-n', '-c', '1', '-W', '2', pod.ip]).status, 0, 'a packet from the link host\'s own address still passes');
      t.ok(await until(5000, () => podCounter('legit') >= 1));
      t.equal(podCounter('spoofed'), before, 'rp_filter=1: the spoofed packets were dropped');
      for (const from of [n2.pods[0]!, n3.pods[0]!]) t.equal(ping(topo, from.ns, pod.ip).status, 0, `with rp_filter=1, ${from.ip} (direct or tunnel) still reaches ${pod.ip}`);
      topo.netns.ip(topo.underlayNs, 'route', 'del', n1.subnet);
      topo.netns.ip(topo.underlayNs, 'addr', 'del', `${spoofed}/32`, 'dev', 'lo');
    });

    await t.test('shutdown leaves no route behind; a restart removes a crashed instance\'s route, never another\'s', async (t) => {
      const d1 = daemons.get(1)!;
      t.equal((await stopDaemon(d1)).code, 0);
      daemons.delete(1);
      t.same(ourRoutes(topo, n1), [], 'n1: none of ours after SIGTERM');

      const d2 = daemons.get(2)!;
      d2.child.kill('SIGKILL');
      await d2.exited;
      daemons.delete(2);
      t.same(ourRoutes(topo, n2), [`${n1.subnet} via ${n1.underlayIp} dev eth0`], 'kill -9 leaves the route');
      topo.netns.ip(n2.ns, 'route', 'add', '10.244.250.0/24', 'via', '10.99.0.250', 'dev', 'eth0', 'proto', String(OVERLAYD_RT_PROTO));
      topo.netns.ip(n2.ns, 'route', 'add', '10.244.251.0/24', 'via', '10.99.0.251', 'dev', 'eth0', 'proto', 'static');
      daemons.set(2, await startDaemon(n2.ns, args(n2)));
      t.notOk(ourRoutes(topo, n2).some((r) => r.startsWith('10.244.250.0/24')), 'the stale route of ours is gone');
      t.match(topo.netns.ip(n2.ns, '-4', 'route', 'show', '10.244.251.0/24'), /via 10\.99\.0\.251 dev eth0 proto static/, 'a route overlayd did not add is untouched');
      t.equal((await stopDaemon(daemons.get(2)!)).code, 0);
      daemons.delete(2);
      t.same(ourRoutes(topo, n2), [], 'n2: none after SIGTERM');
      topo.netns.ip(n2.ns, 'route', 'del', '10.244.251.0/24');
      t.equal((await stopDaemon(daemons.get(3)!)).code, 0);
      daemons.delete(3);
      t.same(ourRoutes(topo, n3), []);
    });

    await t.test('mixed pair: n1 DirectRouting on, n2 off (static files): n2 sends UDP, n1 answers direct', async (t) => {
      const file = (me: NodeInfo, peer: NodeInfo, direct: boolean) => {
        const f = path.join(topo.tmp, `mixed-n${me.index}.json`);
        writeFileSync(f, JSON.stringify({
          Network: CLUSTER_NETWORK, SubnetLen: 24, Backend: { Type: 'udp', Port: PORT, DirectRouting: direct },
          Subnet: me.subnet, PublicIP: me.underlayIp, Peers: [{ Subnet: peer.subnet, PublicIP: peer.underlayIp }],
        }));
        return f;
      };
      // n2 receives n1's replies on eth0 while its own route to n1's pods is the TUN:
      // loose reverse-path filtering (2) accepts them, strict (1) would not (README)
      topo.netns.exec(n2.ns, 'sysctl', ['-qw', 'net.ipv4.conf.all.rp_filter=2', 'net.ipv4.conf.eth0.rp_filter=2']);
      // n1 strict (1): overlayd turns its TUN loose (2), or n2's tunnelled packets, whose
      // source n1 routes via eth0, would be dropped as they leave flannel0
      topo.netns.exec(n1.ns, 'sysctl', ['-qw', 'net.ipv4.conf.all.rp_filter=1', 'net.ipv4.conf.eth0.rp_filter=1']);
      // a crashed DirectRouting instance's route, found by one started with DirectRouting off
      topo.netns.ip(n2.ns, 'route', 'add', '10.244.250.0/24', 'via', '10.99.0.250', 'dev', 'eth0', 'proto', String(OVERLAYD_RT_PROTO));
      for (const [me, peer, direct] of [[n1, n2, true], [n2, n1, false]] as const) {
        daemons.set(me.index, await startDaemon(me.ns, ['--engine', 'native', '--iface', 'eth0', '--static-config', file(me, peer, direct),
          '--subnet-file', path.join(topo.tmp, `mixed-n${me.index}.env`)]));
      }
      t.same(status(topo, n1).routes.map((r) => r.via), ['direct']);
      t.same(status(topo, n2).routes.map((r) => r.via), ['udp']);
      t.same(ourRoutes(topo, n2), [], 'n2 installs nothing, and removed the stale route of ours');
      t.equal(topo.netns.exec(n1.ns, 'sysctl', ['-n', 'net.ipv4.conf.flannel0.rp_filter']).trim(), '2', 'n1: flannel0 loose');
      for (const n of [n1, n2]) installCounters(topo, n);
      const [p1, p2] = [n1.pods[0]!, n2.pods[0]!];
      for (const [a, b] of [[p1, p2], [p2, p1]] as const) {
        const r = ping(topo, a.ns, b.ip);
        t.equal(r.status, 0, `${a.ip} -> ${b.ip}`, { output: r.stdout });
      }
      t.ok(counter(topo, n2, 'udp_to_1') >= 4, 'n2 -> n1: tunnel datagrams');
      t.ok(counter(topo, n1, 'udp_from_2') >= 4, 'n1 accepts them');
      t.equal(counter(topo, n1, 'udp_to_2'), 0, 'n1 -> n2: no datagram');
      t.ok(counter(topo, n1, 'plain_to_2') >= 4, 'n1 -> n2: routed directly');
      for (const n of [n1, n2]) {
        t.equal((await stopDaemon(daemons.get(n.index)!)).code, 0);
        daemons.delete(n.index);
        t.same(ourRoutes(topo, n), []);
      }
    });
  });
}
