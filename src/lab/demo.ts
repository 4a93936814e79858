/**
 * The demo (`npm run demo`, as root): a local 3-node overlayd cluster in network namespaces
 * with 2 pods per node and a real etcd, then a reachability matrix, one pod-to-pod TCP
 * stream through iperf3 and `overlayd status` of node 1. Tears everything down at the end
 * and on Ctrl-C; `--keep` leaves it up and prints how to enter a pod and how to remove it.
 * With --direct-routing the network config turns on Backend.DirectRouting and node 3 sits
 * behind a router: nodes 1 and 2 route each other's pods directly, node 3 is tunnelled.
 * With --ipv6 the cluster is dual-stack (flannel's EnableIPv6/IPv6Network/IPv6SubnetLen):
 * every node has an IPv6 underlay address too, every pod an IPv6 address from the node's v6
 * subnet (FLANNEL_IPV6_SUBNET), and the reachability matrix is run in both families.
 *   npm run demo [-- --keep] [-- --engine js|native] [-- --direct-routing] [-- --ipv6] [-- --down PREFIX]
 */
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync, mkdirSync, rmSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { NsEtcd } from './etcd-ns';
import { run } from './exec';
import { Topology, startDaemon, stopDaemon, OVERLAYD_BIN, CLUSTER_NETWORK6, CLUSTER_SUBNET_LEN6, type DaemonHandle } from './topology';
import { parseSubnetFile } from '../control/subnet-file';
import { formatPrefix } from '../net/addr';
import { formatPrefix6 } from '../net/addr6';
import { FLAGS } from '../config';
import type { StatusDoc } from '../ops/status-types';

const STATE_DIR = '/run/overlayd-demo';
const NODES = 3;
const PODS = 2;
const NETWORK_CONFIG = '{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"udp","Port":8285}}';
const NETWORK_CONFIG_DIRECT = '{"Network":"10.244.0.0/16","SubnetLen":24,"Backend":{"Type":"udp","Port":8285,"DirectRouting":true}}';

/** The network config of the run: flannel's dual-stack fields added with --ipv6. */
function networkConfig(direct: boolean, ipv6: boolean): string {
  if (!ipv6) return direct ? NETWORK_CONFIG_DIRECT : NETWORK_CONFIG;
  const doc = JSON.parse(direct ? NETWORK_CONFIG_DIRECT : NETWORK_CONFIG) as Record<string, unknown>;
  return JSON.stringify({ ...doc, EnableIPv6: true, IPv6Network: CLUSTER_NETWORK6, IPv6SubnetLen: CLUSTER_SUBNET_LEN6 });
}

const bold = (s: string) => (process.stdout.isTTY ? `\x1b[1m${s}\x1b[0m` : s);
const say = (s: string) => process.stdout.write(`${s}\n`);
const step = (i: number, n: number, s: string) => say(bold(`\n[${i}/${n}] ${s}`));

interface DemoState { prefix: string; tmp: string; pids: number[] }

/** Installs missing system tools from Debian's packages (the demo's only side effect outside its namespaces). */
function ensurePackages(): void {
  const wanted: [string, string][] = [['etcd', 'etcd-server'], ['etcdctl', 'etcd-client'], ['ip', 'iproute2'], ['ping', 'iputils-ping'], ['iperf3', 'iperf3']];
  const missing = wanted.filter(([cmd]) => run('sh', ['-c', `command -v ${cmd}`]).status !== 0).map(([, pkg]) => pkg);
  if (missing.length === 0) {
    say(`  all present: ${wanted.map(([c]) => c).join(', ')}`);
    return;
  }
  say(`  installing ${missing.join(' ')} (apt-get)`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (const args of [['update', '-qq'], ['install', '-y', '-qq', ...missing]]) {
    const r = spawnSync('apt-get', args, { stdio: 'inherit', env, timeout: 600_000 });
    if (r.status !== 0) throw new Error(`apt-get ${args.join(' ')} failed`);
  }
}

/** Removes a kept demo: stops its recorded processes by pid and deletes its namespaces. */
function down(prefix: string): number {
  const file = path.join(STATE_DIR, `${prefix}.json`);
  let state: DemoState;
  try {
    state = JSON.parse(readFileSync(file, 'utf8')) as DemoState;
  } catch {
    const known = (() => { try { return readdirSync(STATE_DIR).map((f) => f.replace(/\.json$/, '')); } catch { return []; } })();
    process.stderr.write(`no kept demo named ${prefix}${known.length ? ` (kept: ${known.join(', ')})` : ''}\n`);
    return 1;
  }
  for (const pid of state.pids) {
    try { process.kill(pid, 'SIGTERM'); } catch { /* already gone */ }
  }
  spawnSync('sleep', ['2']);
  const names = run('ip', ['netns', 'list']).stdout.split('\n').map((l) => l.split(' ')[0] ?? '');
  for (const ns of names.filter((n) => n.startsWith(`${state.prefix}-`))) run('ip', ['netns', 'del', ns]);
  rmSync(state.tmp, { recursive: true, force: true });
  rmSync(file, { force: true });
  say(`removed demo ${prefix}`);
  return 0;
}

async function demo(keep: boolean, engine: string, direct: boolean, ipv6: boolean): Promise<number> {
  const STEPS = 7;
  step(1, STEPS, 'system packages');
  ensurePackages();

  step(2, STEPS, `topology: ${NODES} nodes x ${PODS} pods in network namespaces, a bridge as the underlay${ipv6 ? ' (dual-stack: IPv4 and IPv6)' : ''}`);
  const topo = new Topology({ nodes: NODES, podsPerNode: PODS, podsNow: false, tag: 'ovdemo', routed: direct ? [NODES] : [], ipv6 });
  const etcd = new NsEtcd(topo.underlayNs, '10.99.0.254', path.join(topo.tmp, 'etcd'));
  const daemons: DaemonHandle[] = [];
  let tornDown = false;
  const teardown = async () => {
    if (tornDown) return;
    tornDown = true;
    say(bold('\nteardown'));
    for (const d of daemons) {
      const { code, ms } = await stopDaemon(d);
      say(`  overlayd pid ${d.pid} stopped (exit ${code}, ${ms} ms)`);
    }
    await etcd.stop();
    say('  etcd stopped');
    topo.cleanup();
    const left = topo.netns.leftovers();
    say(left.length === 0 ? `  namespaces ${topo.netns.prefix}-* deleted; nothing left behind` : `  LEFT BEHIND: ${left.join(' ')}`);
  };
  const onSignal = () => {
    say('\ninterrupted');
    void teardown().then(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  say(`  namespaces: ${topo.netns.prefix}-ul (underlay bridge 10.99.0.0/24${ipv6 ? ', fd99::/64' : ''}), ${topo.nodes.map((n) => n.ns).join(', ')}`);
  if (topo.routerNs !== undefined) say(`  ${topo.routerNs}: router from 10.99.0.0/24 to 10.99.1.0/24, where node ${NODES} sits (DirectRouting: nodes 1 and 2 share a link)`);

  try {
    step(3, STEPS, `etcd in ${topo.underlayNs} at ${etcd.endpoint}`);
    await etcd.start();
    const netConfig = networkConfig(direct, ipv6);
    const put = etcd.ctl(['put', '/coreos.com/network/config', netConfig]);
    if (put.status !== 0) throw new Error(`etcdctl put failed: ${put.stderr}`);
    say(`  /coreos.com/network/config = ${netConfig}`);

    step(4, STEPS, `overlayd (--engine ${engine}) on each node: lease a subnet, open flannel0, sync routes`);
    for (const node of topo.nodes) {
      const subnetFile = path.join(topo.tmp, `${path.basename(node.ns)}-subnet.env`);
      const v6Args = ipv6 && node.underlayIp6 !== undefined ? ['--public-ipv6', node.underlayIp6] : [];
      const d = await startDaemon(node.ns, ['--engine', engine, '--iface', 'eth0', '--etcd-endpoints', etcd.endpoint, '--subnet-file', subnetFile, ...v6Args]);
      daemons.push(d);
      const sf = parseSubnetFile(readFileSync(subnetFile, 'utf8'), subnetFile);
      const subnet6 = sf.ipv6 ? formatPrefix6(sf.ipv6.subnet) : undefined;
      if (ipv6 && subnet6 === undefined) throw new Error(`${subnetFile} has no FLANNEL_IPV6_SUBNET although the network config enables IPv6`);
      // what flannel's CNI plugin would do with the subnet file: cni0 + pods with FLANNEL_MTU
      topo.addPods(node.index, formatPrefix(sf.subnet), sf.mtu, subnet6);
      const v6 = subnet6 === undefined ? '' : ` and ${subnet6} (PublicIPv6 ${node.underlayIp6})`;
      say(`  node ${node.index} (${node.underlayIp}): lease ${formatPrefix(sf.subnet)}${v6}, FLANNEL_MTU=${sf.mtu}, pods ${node.pods.map((p) => [p.ip, p.ip6].filter((a) => a !== undefined).join(' ')).join(', ')}  [pid ${d.pid}]`);
    }
    const lease = etcd.ctl(['get', '--prefix', '/coreos.com/network/subnets/']);
    say(`  etcd now holds:\n${lease.stdout.trim().split('\n').map((l) => `    ${l}`).join('\n')}`);

    step(5, STEPS, 'routes: every node knows every other node (waiting for the watches)');
    for (const node of topo.nodes) {
      const deadline = Date.now() + 30_000; // bounded, and generous for a loaded machine
      let routes: StatusDoc['routes'] = [];
      let routes6: NonNullable<StatusDoc['routes6']> = [];
      while (Date.now() < deadline) {
        const r = topo.netns.tryExec(node.ns, process.execPath, [OVERLAYD_BIN, 'status', '--json']);
        const doc = r.status === 0 ? (JSON.parse(r.stdout) as StatusDoc) : undefined;
        routes = doc?.routes ?? [];
        routes6 = doc?.routes6 ?? [];
        if (routes.length === NODES - 1 && (!ipv6 || routes6.length === NODES - 1)) break;
        await new Promise((res) => setTimeout(res, 200));
      }
      // via: direct (kernel route on the underlay, DirectRouting) or udp (the tunnel)
      say(`  node ${node.index}: ${routes.length} routes (${routes.map((r) => `${r.subnet} ${r.via ?? 'udp'}`).join(', ')})`);
      // which underlay inner IPv6 takes to each peer: IPv6 when both ends have a PublicIPv6
      if (ipv6) say(`          ${routes6.length} v6 routes (${routes6.map((r) => `${r.subnet} over ${r.underlay} to ${r.publicIpv6 ?? r.publicIp}`).join(', ')})`);
    }

    step(6, STEPS, `reachability: every pod pings every other pod${ipv6 ? ' (ping, then ping -6)' : ''}`);
    const pods = topo.nodes.flatMap((n) => n.pods);
    let bad = 0;
    for (const family of ipv6 ? [4, 6] : [4]) {
      const addr = (p: (typeof pods)[number]) => (family === 6 ? p.ip6 ?? '?' : p.ip);
      const w = family === 6 ? 20 : 13;
      if (family === 6) say('');
      say(`  ${'from \\ to'.padEnd(w + 1)}${pods.map((p) => addr(p).padEnd(w)).join('')}`);
      for (const a of pods) {
        const cells = pods.map((b) => {
          if (a === b) return '-'.padEnd(w);
          const r = topo.netns.tryExec(a.ns, 'ping', ['-n', '-c', '1', '-W', '2', addr(b)], 5000);
          if (r.status !== 0) bad++;
          return (r.status === 0 ? 'ok' : 'FAIL').padEnd(w);
        });
        say(`  ${addr(a).padEnd(w + 1)}${cells.join('')}`);
      }
    }
    const pairs = pods.length * (pods.length - 1) * (ipv6 ? 2 : 1);
    say(bad === 0 ? `  all ${pairs} pairs reach each other${ipv6 ? ' in both families' : ''}` : `  ${bad} of ${pairs} pairs FAILED`);

    step(7, STEPS, `throughput: one TCP stream, pod on node 1 -> pod on node 2 (iperf3, 3 s${ipv6 ? ', IPv4 then IPv6' : ''})`);
    const [src, dst] = [topo.node(1).pods[0], topo.node(2).pods[0]];
    if (!src || !dst) throw new Error('pods missing');
    for (const [from, to] of ipv6 ? [[src.ip, dst.ip], [src.ip6 ?? '?', dst.ip6 ?? '?']] : [[src.ip, dst.ip]]) {
      const server = spawn('ip', ['netns', 'exec', dst.ns, 'iperf3', '-s', '-1', '-B', to], { stdio: 'ignore' });
      await new Promise((r) => setTimeout(r, 500));
      const ip3 = topo.netns.tryExec(src.ns, 'iperf3', ['-c', to, '-t', '3', '-J'], 20_000);
      server.kill();
      try {
        const j = JSON.parse(ip3.stdout) as { end: { sum_received: { bits_per_second: number; bytes: number } } };
        say(`  ${from} -> ${to}: ${(j.end.sum_received.bits_per_second / 1e9).toFixed(2)} Gbit/s (${(j.end.sum_received.bytes / 1e6).toFixed(0)} MB received)`);
      } catch {
        say(`  iperf3 failed: ${ip3.stderr || ip3.stdout}`.slice(0, 500));
        bad++;
      }
    }

    say(bold(`\noverlayd status of node 1 (ip netns exec ${topo.node(1).ns} overlayd status)`));
    say(topo.netns.tryExec(topo.node(1).ns, process.execPath, [OVERLAYD_BIN, 'status']).stdout.trimEnd().split('\n').map((l) => `  ${l}`).join('\n'));

    if (keep) {
      process.off('SIGINT', onSignal);
      process.off('SIGTERM', onSignal);
      mkdirSync(STATE_DIR, { recursive: true });
      const state: DemoState = { prefix: topo.netns.prefix, tmp: topo.tmp, pids: [...daemons.map((d) => d.pid), etcd.pid ?? -1].filter((p) => p > 0) };
      writeFileSync(path.join(STATE_DIR, `${topo.netns.prefix}.json`), JSON.stringify(state));
      for (const d of daemons) d.child.unref();
      say(bold('\nthe cluster stays up (--keep):'));
      say(`  enter a pod:      ip netns exec ${src.ns} bash      (then: ping ${dst.ip})`);
      say(`  ask a node:       ip netns exec ${topo.node(1).ns} ${OVERLAYD_BIN} status`);
      say(`  remove it all:    npm run demo -- --down ${topo.netns.prefix}`);
      process.exit(bad === 0 ? 0 : 1);
    }
    await teardown();
    return bad === 0 ? 0 : 1;
  } catch (err) {
    process.stderr.write(`demo failed: ${err instanceof Error ? err.message : String(err)}\n`);
    for (const d of daemons) process.stderr.write(`--- overlayd pid ${d.pid} output (tail):\n${d.output().slice(-1500)}\n`);
    await teardown();
    return 1;
  }
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { keep: { type: 'boolean' }, engine: { type: 'string', default: FLAGS.engine.default }, down: { type: 'string' }, 'direct-routing': { type: 'boolean' }, ipv6: { type: 'boolean' } }, strict: true });
  if (process.getuid?.() !== 0) {
    process.stderr.write('the demo needs root (network namespaces, TUN devices, apt-get)\n');
    return 1;
  }
  if (values.down !== undefined) return down(values.down);
  return demo(values.keep === true, values.engine ?? FLAGS.engine.default, values['direct-routing'] === true, values.ipv6 === true);
}

void main().then((code) => process.exit(code));


