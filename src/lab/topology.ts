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
 *
 * Traffic stays between these namespaces. cleanup() deletes exactly them.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { NetnsSet } from './netns';
import { formatIp, parsePrefix } from '../net/addr';

export const UNDERLAY_NET = '10.99.0';
/** the second underlay subnet, behind the router (opts.routed) */
export const ROUTED_NET = '10.99.1';
export const ROUTER_IP = `${UNDERLAY_NET}.253`;
export const CLUSTER_NETWORK = '10.244.0.0/16';
export const PORT = 8285;

export interface PodInfo { readonly ns: string; readonly ip: string }
export interface NodeInfo {
  readonly index: number;
  readonly ns: string;
  readonly underlayIp: string;
  /** the node's pod subnet; set by addPods() */
  subnet: string;
  readonly pods: PodInfo[];
}

export interface TopologyOptions {
  readonly nodes: number;
  readonly podsPerNode: number;
  /** pods now in 10.244.K.0/24 (true, default), or later through addPods() once the subnet is known */
  readonly podsNow?: boolean;
  /** underlay MTU, bytes (default 1500) */
  readonly underlayMtu?: number;
  readonly tag?: string;
  /** node indices placed behind a router on a second underlay subnet (default none) */
  readonly routed?: readonly number[];
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
      this.underlayNs = ns.add('ul');
      ns.ip(this.underlayNs, 'link', 'add', 'br0', 'type', 'bridge');
      ns.ip(this.underlayNs, 'addr', 'add', `${UNDERLAY_NET}.254/24`, 'dev', 'br0');
      ns.ip(this.underlayNs, 'link', 'set', 'br0', 'up');
      this.routerNs = (opts.routed ?? []).length > 0 ? this.addRouter() : undefined;
      for (let k = 1; k <= opts.nodes; k++) this.addNode(k);
    } catch (err) {
      this.cleanup();
      throw err;
    }
  }

  /** The router between br0 and br1 (the second underlay subnet). */
  private addRouter(): string {
    const ns = this.netns;
    const rt = ns.add('rt');
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
    return rt;
  }

  private addNode(k: number): void {
    const ns = this.netns;
    const node = ns.add(`n${k}`);
    const mtu = String(this.opts.underlayMtu ?? 1500);
    const routed = this.routerNs !== undefined && (this.opts.routed ?? []).includes(k);
    const [peerNs, bridge, net] = routed ? [this.routerNs as string, 'br1', ROUTED_NET] : [this.underlayNs, 'br0', UNDERLAY_NET];
    ns.ip(node, 'link', 'add', 'eth0', 'mtu', mtu, 'type', 'veth', 'peer', 'name', `v${k}`, 'mtu', mtu, 'netns', peerNs);
    ns.ip(peerNs, 'link', 'set', `v${k}`, 'master', bridge, 'up');
    ns.ip(node, 'addr', 'add', `${net}.${k}/24`, 'dev', 'eth0');
    ns.ip(node, 'link', 'set', 'eth0', 'up');
    if (routed) ns.ip(node, 'route', 'add', 'default', 'via', `${ROUTED_NET}.254`);
    else if (this.routerNs !== undefined) ns.ip(node, 'route', 'add', `${ROUTED_NET}.0/24`, 'via', ROUTER_IP);
    ns.exec(node, 'sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
    const info: NodeInfo = { index: k, ns: node, underlayIp: `${net}.${k}`, subnet: '', pods: [] };
    this.nodes.push(info);
    if (this.opts.podsNow !== false) this.addPods(k, `10.244.${k}.0/24`);
  }

  /**
   * What flannel's CNI plugin does with the subnet file: a cni0 bridge with the subnet's
   * first address, and podsPerNode pods behind veths. `podMtu` (bytes) defaults to 1500.
   */
  addPods(k: number, subnet: string, podMtu = 1500): void {
    const ns = this.netns;
    const info = this.node(k);
    const p = parsePrefix(subnet);
    if (!p || p.len > 29) throw new Error(`addPods: bad subnet ${subnet}`);
    const host = (i: number) => formatIp(p.addr + i);
    info.subnet = subnet;
    ns.ip(info.ns, 'link', 'add', 'cni0', 'type', 'bridge');
    ns.ip(info.ns, 'addr', 'add', `${host(1)}/${p.len}`, 'dev', 'cni0');
    ns.ip(info.ns, 'link', 'set', 'cni0', 'up');
    for (let j = 1; j <= this.opts.podsPerNode; j++) {
      const pod = ns.add(`n${k}p${j}`);
      const ipAddr = host(j + 1);
      ns.ip(info.ns, 'link', 'add', `vp${j}`, 'mtu', String(podMtu), 'type', 'veth', 'peer', 'name', 'eth0', 'mtu', String(podMtu), 'netns', pod);
      ns.ip(info.ns, 'link', 'set', `vp${j}`, 'master', 'cni0', 'up');
      ns.ip(pod, 'addr', 'add', `${ipAddr}/${p.len}`, 'dev', 'eth0');
      ns.ip(pod, 'link', 'set', 'eth0', 'up');
      ns.ip(pod, 'route', 'add', 'default', 'via', host(1));
      info.pods.push({ ns: pod, ip: ipAddr });
    }
  }

  node(k: number): NodeInfo {
    const n = this.nodes[k - 1];
    if (!n) throw new Error(`no node ${k}`);
    return n;
  }

  /**
   * Writes a static cluster file for node k (all other nodes as peers); returns its path.
   * `backend`: extra Backend fields, e.g. { DirectRouting: true }.
   */
  staticConfig(k: number, extraPeers: { Subnet: string; PublicIP: string }[] = [], backend: Record<string, unknown> = {}): string {
    const me = this.node(k);
    const file = path.join(this.tmp, `static-n${k}.json`);
    const doc = {
      Network: CLUSTER_NETWORK,
      SubnetLen: 24,
      Backend: { Type: 'udp', Port: PORT, ...backend },
      Subnet: me.subnet,
      PublicIP: me.underlayIp,
      Peers: [...this.nodes.filter((n) => n !== me).map((n) => ({ Subnet: n.subnet, PublicIP: n.underlayIp })), ...extraPeers],
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
