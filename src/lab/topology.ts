/**
 * The DESIGN.md test topology, built in network namespaces owned by one run:
 *
 *   ul  (underlay namespace): bridge br0, 10.99.0.254/24 (etcd may listen here)
 *   nK  (node K): eth0 10.99.0.K/24 on br0; ip_forward=1; cni0 bridge with the first address
 *         of the node's subnet (10.244.K.0/24 unless given, e.g. from the lease's subnet file)
 *   nKpJ (pod J of node K): eth0 = the (J+1)th address of the subnet, default via cni0
 *   with `routed` nodes (opts.routed): rt (router namespace): 10.99.0.253/24 on br0, bridge
 *         br1 10.99.1.254/24, ip_forward=1; a routed node K has eth0 10.99.1.K/24 on br1 and
 *         default via 10.99.1.254; ul and the nodes on br0 route 10.99.1.0/24 via 10.99.0.253
 *   dual-stack labs (opts.ipv6): the same plan in IPv6 beside it, every address nodad (no
 *         DAD wait): ul br0 fd99::fe/64; node K eth0 fd99::K/64 (fd99:1::K/64 when routed;
 *         rt fd99::fd/64 and br1 fd99:1::fe/64), except the nodes in opts.noIpv6Underlay,
 *         which keep an IPv4-only underlay; net.ipv6.conf.all.forwarding=1 in every node;
 *         addPods() with a v6 subnet also gives cni0 its first address and each pod the
 *         next ones, with a default v6 route via cni0
 *
 * Traffic stays between these namespaces. cleanup() deletes exactly them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { NetnsSet } from './netns';
import { formatIp, parsePrefix } from '../net/addr';
import { formatIp6, parsePrefix6 } from '../net/addr6';

export const UNDERLAY_NET = '10.99.0';
/** the second underlay subnet, behind the router (opts.routed) */
export const ROUTED_NET = '10.99.1';
export const ROUTER_IP = `${UNDERLAY_NET}.253`;
export const CLUSTER_NETWORK = '10.244.0.0/16';
export const PORT = 8285;
/** the IPv6 underlay prefix (opts.ipv6), and the second one behind the router */
export const UNDERLAY_NET6 = 'fd99::';
export const ROUTED_NET6 = 'fd99:1::';
export const ROUTER_IP6 = 'fd99::fd';
/** what a dual-stack lab puts in etcd's network config beside CLUSTER_NETWORK (flannel's fields) */
export const CLUSTER_NETWORK6 = 'fd00:10:244::/56';
export const CLUSTER_SUBNET_LEN6 = 64;

export interface PodInfo {
  readonly ns: string;
  readonly ip: string;
  /** the pod's IPv6 address, when addPods() was given a v6 subnet */
  readonly ip6?: string;
}
export interface NodeInfo {
  readonly index: number;
  readonly ns: string;
  readonly underlayIp: string;
  /** the node's IPv6 underlay address (opts.ipv6, unless the node is in opts.noIpv6Underlay) */
  readonly underlayIp6?: string;
  /** the node's underlay MTU, bytes */
  readonly underlayMtu: number;
  /** the node's pod subnet; set by addPods() */
  subnet: string;
  /** the node's IPv6 pod subnet; set by addPods() when given one, else '' */
  subnet6: string;
  readonly pods: PodInfo[];
}

export interface TopologyOptions {
  readonly nodes: number;
  readonly podsPerNode: number;
  /** pods now in 10.244.K.0/24 (and fd00:10:244:K::/64 with ipv6) (true, default), or later through addPods() once the subnet is known */
  readonly podsNow?: boolean;
  /** underlay MTU, bytes (default 1500) */
  readonly underlayMtu?: number;
  readonly tag?: string;
  /** node indices placed behind a router on a second underlay subnet (default none) */
  readonly routed?: readonly number[];
  /** a dual-stack lab: IPv6 underlay addresses and IPv6 forwarding in the nodes (default false) */
  readonly ipv6?: boolean;
  /** with ipv6: node indices that get no IPv6 underlay address (default none) */
  readonly noIpv6Underlay?: readonly number[];
  /** underlay MTU of single nodes (index -> bytes), overriding underlayMtu for their link */
  readonly nodeMtu?: Readonly<Record<number, number>>;
}


export class Topology {
  readonly netns: NetnsSet;
  readonly nodes: NodeInfo[] = [];
  readonly underlayNs: string;
  /** the router namespace; set when opts.routed names a node */
  readonly routerNs: string | undefined;
  readonly tmp: string;

  constructor(readonly opts: TopologyOptions) {
    this.netns = new NetnsSet(opts.tag ?? 'ovt');
    this.tmp = mkdtempSync(path.join(tmpdir(), `${this.netns.prefix}-`));
    const ns = this.netns;
    try {
      this.underlayNs = this.addNs('ul');
      ns.ip(this.underlayNs, 'link', 'add', 'br0', 'type', 'bridge');
      ns.ip(this.underlayNs, 'addr', 'add', `${UNDERLAY_NET}.254/24`, 'dev', 'br0');
      if (opts.ipv6) ns.ip(this.underlayNs, 'addr', 'add', `${UNDERLAY_NET6}fe/64`, 'dev', 'br0', 'nodad');
      ns.ip(this.underlayNs, 'link', 'set', 'br0', 'up');
      this.routerNs = (opts.routed ?? []).length > 0 ? this.addRouter() : undefined;
      for (let k = 1; k <= opts.nodes; k++) this.addNode(k);
    } catch (err) {
      this.cleanup();
      throw err;
    }
  }

  /**
   * A namespace of this lab. In a dual-stack lab, addresses on links created in it or moved
   * into it skip DAD (the default for new links), so nothing waits for it.
   */
  private addNs(name: string): string {
    const ns = this.netns.add(name);
    if (this.opts.ipv6) this.netns.exec(ns, 'sysctl', ['-qw', 'net.ipv6.conf.default.accept_dad=0', 'net.ipv6.conf.all.accept_dad=0']);
    return ns;
  }

  /** The router between br0 and br1 (the second underlay subnet). */
  private addRouter(): string {
    const ns = this.netns;
    const rt = this.addNs('rt');
    const mtu = String(this.opts.underlayMtu ?? 1500);
    ns.ip(rt, 'link', 'add', 'eth0', 'mtu', mtu, 'type', 'veth', 'peer', 'name', 'vrt', 'mtu', mtu, 'netns', this.underlayNs);
    ns.ip(this.underlayNs, 'link', 'set', 'vrt', 'master', 'br0', 'up');
    ns.ip(rt, 'addr', 'add', `${ROUTER_IP}/24`, 'dev', 'eth0');
    ns.ip(rt, 'link', 'set', 'eth0', 'up');
    ns.ip(rt, 'link', 'add', 'br1', 'type', 'bridge');
    ns.ip(rt, 'addr', 'add', `${ROUTED_NET}.254/24`, 'dev', 'br1');
    ns.ip(rt, 'link', 'set', 'br1', 'up');
    ns.exec(rt, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    ns.ip(this.underlayNs, 'route', 'add', `${ROUTED_NET}.0/24`, 'via', ROUTER_IP);
    if (this.opts.ipv6) {
      ns.ip(rt, 'addr', 'add', `${ROUTER_IP6}/64`, 'dev', 'eth0', 'nodad');
      ns.ip(rt, 'addr', 'add', `${ROUTED_NET6}fe/64`, 'dev', 'br1', 'nodad');
      ns.exec(rt, 'sysctl', ['-qw', 'net.ipv6.conf.all.forwarding=1']);
      ns.ip(this.underlayNs, '-6', 'route', 'add', `${ROUTED_NET6}/64`, 'via', ROUTER_IP6);
    }
    return rt;
  }

  private addNode(k: number): void {
    const ns = this.netns;
    const node = ns.add(`n${k}`);
    const mtuN = this.opts.nodeMtu?.[k] ?? this.opts.underlayMtu ?? 1500;
    const mtu = String(mtuN);
    const routed = this.routerNs !== undefined && (this.opts.routed ?? []).includes(k);
    const [peerNs, bridge, net, net6] = routed ? [this.routerNs as string, 'br1', ROUTED_NET, ROUTED_NET6] : [this.underlayNs, 'br0', UNDERLAY_NET, UNDERLAY_NET6];
    ns.ip(node, 'link', 'add', 'eth0', 'mtu', mtu, 'type', 'veth', 'peer', 'name', `v${k}`, 'mtu', mtu, 'netns', peerNs);
    ns.ip(peerNs, 'link', 'set', `v${k}`, 'master', bridge, 'up');
    ns.ip(node, 'addr', 'add', `${net}.${k}/24`, 'dev', 'eth0');
    const v6 = this.opts.ipv6 === true && !(this.opts.noIpv6Underlay ?? []).includes(k);
    const underlayIp6 = v6 ? `${net6}${k.toString(16)}` : undefined;
    if (underlayIp6 !== undefined) ns.ip(node, 'addr', 'add', `${underlayIp6}/64`, 'dev', 'eth0', 'nodad');
    ns.ip(node, 'link', 'set', 'eth0', 'up');
    if (routed) ns.ip(node, 'route', 'add', 'default', 'via', `${ROUTED_NET}.254`);
    else if (this.routerNs !== undefined) ns.ip(node, 'route', 'add', `${ROUTED_NET}.0/24`, 'via', ROUTER_IP);
    if (v6 && routed) ns.ip(node, '-6', 'route', 'add', 'default', 'via', `${ROUTED_NET6}fe`);
    else if (v6 && this.routerNs !== undefined) ns.ip(node, '-6', 'route', 'add', `${ROUTED_NET6}/64`, 'via', ROUTER_IP6);
    ns.exec(node, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    if (this.opts.ipv6) ns.exec(node, 'sysctl', ['-qw', 'net.ipv6.conf.all.forwarding=1']);
    const info: NodeInfo = { index: k, ns: node, underlayIp: `${net}.${k}`, ...(underlayIp6 !== undefined ? { underlayIp6 } : {}), underlayMtu: mtuN, subnet: '', subnet6: '', pods: [] };
    this.nodes.push(info);
    if (this.opts.podsNow !== false) this.addPods(k, `10.244.${k}.0/24`, 1500, this.opts.ipv6 ? `fd00:10:244:${k.toString(16)}::/64` : undefined);
  }

  /**
   * What flannel's CNI plugin does with the subnet file: a cni0 bridge with the subnet's
   * first address, and podsPerNode pods behind veths. `podMtu` (bytes) defaults to 1500.
   * `subnet6` (FLANNEL_IPV6_SUBNET's prefix, dual-stack): cni0 also gets its first address,
   * each pod the next one, and a default v6 route via cni0 (all nodad).
   */
  addPods(k: number, subnet: string, podMtu = 1500, subnet6?: string): void {
    const ns = this.netns;
    const info = this.node(k);
    const p = parsePrefix(subnet);
    if (!p || p.len > 29) throw new Error(`addPods: bad subnet ${subnet}`);
    const p6 = subnet6 === undefined ? undefined : parsePrefix6(subnet6, false);
    if (subnet6 !== undefined && (!p6 || p6.len > 125)) throw new Error(`addPods: bad IPv6 subnet ${subnet6}`);
    const host = (i: number) => formatIp(p.addr + i);
    const hostV6 = (i: number) => (p6 ? formatIp6(p6.addr + BigInt(i)) : undefined);
    info.subnet = subnet;
    info.subnet6 = subnet6 ?? '';
    ns.ip(info.ns, 'link', 'add', 'cni0', 'type', 'bridge');
    ns.ip(info.ns, 'addr', 'add', `${host(1)}/${p.len}`, 'dev', 'cni0');
    if (p6) ns.ip(info.ns, 'addr', 'add', `${hostV6(1)}/${p6.len}`, 'dev', 'cni0', 'nodad');
    ns.ip(info.ns, 'link', 'set', 'cni0', 'up');
    for (let j = 1; j <= this.opts.podsPerNode; j++) {
      const pod = this.addNs(`n${k}p${j}`);
      const ipAddr = host(j + 1);
      ns.ip(info.ns, 'link', 'add', `vp${j}`, 'mtu', String(podMtu), 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', String(podMtu), 'netns', pod);
      ns.ip(info.ns, 'link', 'set', `vp${j}`, 'master', 'cni0', 'up');
      ns.ip(pod, 'addr', 'add', `${ipAddr}/${p.len}`, 'dev', 'eth0');
      const ip6 = hostV6(j + 1);
      if (ip6 !== undefined) ns.ip(pod, 'addr', 'add', `${ip6}/${p6?.len}`, 'dev', 'eth0', 'nodad');
      ns.ip(pod, 'link', 'set', 'eth0', 'up');
      ns.ip(pod, 'route', 'add', 'default', 'via', host(1));
      if (ip6 !== undefined) ns.ip(pod, '-6', 'route', 'add', 'default', 'via', hostV6(1) as string);
      info.pods.push({ ns: pod, ip: ipAddr, ...(ip6 !== undefined ? { ip6 } : {}) });
    }
  }

  node(k: number): NodeInfo {
    const n = this.nodes[k - 1];
    if (!n) throw new Error(`no node ${k}`);
    return n;
  }

  /**
   * Writes a static cluster file for node k (all other nodes as peers); returns its path.
   * `backend`: extra Backend fields, e.g. { DirectRouting: true }. In a dual-stack lab whose
   * pods have v6 subnets, the file is dual-stack too (flannel's EnableIPv6 fields, each node's
   * IPv6Subnet and, when it has an IPv6 underlay, PublicIPv6). `partialPeers`: the nodes (indices)
   * that run with --partial-checksums: their peer entries carry that BackendData.
   */
  staticConfig(k: number, extraPeers: { Subnet: string; PublicIP: string }[] = [], backend: Record<string, unknown> = {}, partialPeers: readonly number[] = []): string {
    const me = this.node(k);
    const file = path.join(this.tmp, `static-n${k}.json`);
    const dual = this.opts.ipv6 === true && me.subnet6 !== '';
    const v6 = (n: NodeInfo) => (dual && n.subnet6 !== '' ? { IPv6Subnet: n.subnet6, ...(n.underlayIp6 !== undefined ? { PublicIPv6: n.underlayIp6 } : {}) } : {});
    const doc = {
      Network: CLUSTER_NETWORK,
      SubnetLen: 24,
      ...(dual ? { EnableIPv6: true, IPv6Network: CLUSTER_NETWORK6, IPv6SubnetLen: CLUSTER_SUBNET_LEN6 } : {}),
      Backend: { Type: 'udp', Port: PORT, ...backend },
      Subnet: me.subnet,
      PublicIP: me.underlayIp,
      ...v6(me),
      Peers: [
        ...this.nodes.filter((n) => n !== me).map((n) => ({
          Subnet: n.subnet, PublicIP: n.underlayIp, ...v6(n),
          ...(partialPeers.includes(this.nodes.indexOf(n) + 1) ? { BackendData: { PartialChecksums: true } } : {}),
        })),
        ...extraPeers,
      ],
    };
    writeFileSync(file, JSON.stringify(doc, null, 2));
    return file;
  }

  cleanup(): void {
    this.netns.cleanup();
    rmSync(this.tmp, { recursive: true, force: true });
  }
}

/** The overlayd command, run from the built tree. */
export const OVERLAYD_BIN = path.resolve(__dirname, '..', '..', '..', 'bin', 'overlayd');

export interface DaemonHandle {
  readonly child: ChildProcess;
  readonly pid: number;
  /** the daemon's stdout+stderr file */
  readonly logFile: string;
  /** all stdout+stderr so far */
  output(): string;
  /** resolves the exit code (or signal name) */
  readonly exited: Promise<number | string>;
}

let daemonSeq = 0;
const daemonLogs = new Set<string>();
let logCleanupHooked = false;

/** Daemon log files live until this process exits (tests read them after the daemon ended). */
function trackLog(file: string): void {
  daemonLogs.add(file);
  if (logCleanupHooked) return;
  logCleanupHooked = true;
  process.on('exit', () => {
    for (const f of daemonLogs) rmSync(f, { force: true });
  });
}

/**
 * Starts `overlayd args` inside namespace ns and waits (bounded) until it logs "forwarding".
 * Its output goes to a file, not a pipe: a caller blocked in a synchronous call must never
 * stall the daemon on a full pipe. `bin`: the command (default: this checkout's).
 */
export async function startDaemon(ns: string, args: readonly string[], timeoutMs = 20_000, env: NodeJS.ProcessEnv = process.env, bin = OVERLAYD_BIN): Promise<DaemonHandle> {
  const handle = spawnDaemon(ns, args, env, bin);
  await waitForLog(handle, /"msg":"forwarding"/, timeoutMs);
  return handle;
}

/**
 * The environment a lab daemon gets: `env` without the test harness's own variables
 * (OVERLAYD_TEST_*, OVERLAYD_FUZZ_*), which the daemon would rightly warn about as unknown.
 */
export function daemonEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(env).filter(([k]) => !/^OVERLAYD_(TEST|FUZZ)_/.test(k)));
}

/** Starts `overlayd args` inside namespace ns without waiting for anything. */
export function spawnDaemon(ns: string, args: readonly string[], env: NodeJS.ProcessEnv = process.env, bin = OVERLAYD_BIN): DaemonHandle {
  const logFile = path.join(tmpdir(), `overlayd-${process.pid}-${++daemonSeq}-${path.basename(ns)}.log`);
  const fd = openSync(logFile, 'w');
  // run through its shebang, as systemd and a shell do (it carries node's flags)
  const child = spawn('ip', ['netns', 'exec', ns, bin, ...args], { stdio: ['ignore', fd, fd], env: daemonEnv(env) });
  closeSync(fd);
  const output = () => {
    try {
      return readFileSync(logFile, 'utf8');
    } catch {
      return '';
    }
  };
  const exited = new Promise<number | string>((resolve) => child.on('exit', (code, sig) => resolve(code ?? sig ?? -1)));
  trackLog(logFile);
  return { child, pid: child.pid ?? -1, logFile, output, exited };
}

/** Waits (bounded) until the daemon's output matches `re`; SIGKILLs it and throws past the bound or if it exits. */
export async function waitForLog(h: DaemonHandle, re: RegExp, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!re.test(h.output())) {
    if (h.child.exitCode !== null || h.child.signalCode !== null) throw new Error(`overlayd exited while waiting for ${re}:\n${h.output()}`);
    if (Date.now() > deadline) {
      h.child.kill('SIGKILL');
      throw new Error(`overlayd did not log ${re} within ${timeoutMs} ms:\n${h.output()}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** SIGTERM by pid, wait (bounded) for exit; SIGKILL past the bound. Resolves exit code and ms taken. */
export async function stopDaemon(h: DaemonHandle, timeoutMs = 5000): Promise<{ code: number | string; ms: number }> {
  const t0 = Date.now();
  if (h.child.exitCode !== null || h.child.signalCode !== null) return { code: h.child.exitCode ?? h.child.signalCode ?? -1, ms: 0 };
  h.child.kill('SIGTERM');
  const timer = setTimeout(() => h.child.kill('SIGKILL'), timeoutMs);
  const code = await h.exited;
  clearTimeout(timer);
  return { code, ms: Date.now() - t0 };
}
