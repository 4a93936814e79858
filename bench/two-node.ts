/**
 * The two-node benchmark (root): the e2e topology (src/lab/topology.ts: two nodes on a veth
 * underlay bridged in the underlay namespace, one pod behind cni0 on each), iperf3 and ping
 * from pod n1p1 to pod n2p1, through each setup in turn:
 *   vxlan   the in-kernel reference: a VXLAN device in each node namespace over eth0 (static
 *           FDB and neighbour entries, routes to the other pod subnet, MTU 1450), no overlayd
 *   vxlan6  the same over the IPv6 underlay (fd99::K, MTU 1430): dual-stack runs only
 *   direct-routing  overlayd --engine native with Backend.DirectRouting: the nodes share the
 *           link, so each routes the other's pod subnet via its underlay address (≈ underlay)
 *   native  overlayd --engine native on both nodes (when the daemon accepts it)
 *   native-pc  the same with --partial-checksums on both nodes
 *   native-q2  the same with --queues 2
 *   js      overlayd --engine js on both nodes
 * Dual-stack runs (opts.ipv6: the lab's IPv6 underlay, pods with v6 addresses, the daemons'
 * static configs dual-stack, both VXLAN devices carrying IPv6 inner too) add, per setup and
 * round, TCP 1 stream over IPv6 right after the IPv4 one (same daemons, same round).
 * Per setup and round: ping RTT (idle), TCP 1 stream, TCP 4 streams, UDP 64-byte packets,
 * large UDP as QUIC sends it (1400-byte datagrams in UDP_SEGMENT writes, bench/udp-gso.py;
 * bytes counted into the receiving pod's eth0);
 * CPU of both daemons (/proc/PID/stat utime+stime) and of the whole machine (/proc/stat)
 * around each iperf3 run; daemon RSS after the rounds; and for the overlayd engines a daemon
 * with 10,000 routes (a static config of 10,000 peers).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { startDaemon, stopDaemon, OVERLAYD_BIN, PORT, type DaemonHandle, type Topology } from '../src/lab/topology';
import { hostCpu, processCpuSeconds, processMemory, processName, type MemInfo } from './procfs';
import { median, percentile } from './stats';
import { idleCpu, type IdleCpu } from './idle';
import type { Janitor } from './janitor';
import { daemonArgs, isKernelSetup, type Availability, type DaemonSetup, type Setup } from './engines';
import { OVERLAYD_RT_PROTO } from '../src/net/direct-routes';
import { flatCounters, type StatusDoc } from '../src/ops/status-types';

export const IPERF_PORT = 5201;
const VXLAN_PORT = 4789;
const VXLAN_VNI = 1;
/** VXLAN over IPv4 costs 50 bytes: outer IPv4 20 + UDP 8 + VXLAN 8 + inner Ethernet 14 */
const VXLAN_MTU = 1450;
/** VXLAN over IPv6 costs 70 bytes: outer IPv6 40 + UDP 8 + VXLAN 8 + inner Ethernet 14 */
const VXLAN6_MTU = 1430;
const PING_COUNT = 200;
const PING_INTERVAL_S = 0.01;
const ROUTES_10K = 10_000;
/** window of the idle-CPU measurement after the last round's runs, s (issue 13: >= 10 s of no traffic) */
const IDLE_SECONDS = 12;

export interface TwoNodeOptions {
  readonly rounds: number;
  /** seconds per iperf3 run */
  readonly seconds: number;
  readonly setups: readonly { setup: Setup; availability: Availability }[];
  readonly topo: Topology;
  readonly janitor: Janitor;
  readonly log: (line: string) => void;
  /** dual-stack run: the topology has IPv6 (opts.ipv6, pods with v6 subnets); adds tcp1v6 */
  readonly ipv6?: boolean;
}

export interface Failure { readonly error: string }

export interface CpuSample {
  /** utime+stime of both daemons during the run, seconds (undefined for vxlan: no daemon) */
  readonly daemonCpuS?: number;
  /** the same per daemon, node 1 (the iperf3 client's: the sender) first */
  readonly daemonCpuSByNode?: readonly number[];
  /** busy CPU time of the whole machine during the run (iperf3, kernel, daemons), seconds */
  readonly hostCpuS: number;
  /** of which softirq, seconds */
  readonly hostSoftirqS: number;
  readonly wallS: number;
}

export interface Accounted {
  /**
   * Counters that changed during the run (after - before), keys "nK.udp.<snmp Udp field>",
   * "nK.<device>.rx_dropped|tx_dropped" (flannel0, vxbench, eth0) and
   * "nK.daemon.<status counter>" (overlayd status --json, flatCounters: "drops.no_route", ...): where packets were lost.
   */
  readonly counters?: Record<string, number>;
}

export interface TcpResult extends CpuSample, Accounted {
  readonly streams: number;
  readonly gbps: number;
  /** bytes the receiver got */
  readonly bytes: number;
  readonly retransmits: number;
  /** daemon CPU seconds per GB (1e9 bytes) received */
  readonly daemonCpuSPerGB?: number;
  /** daemon CPU cores busy per Gbit/s moved (= CPU s per GB / 8) */
  readonly daemonCoresPerGbps?: number;
  /** daemonCpuSPerGB per daemon, node 1 (the sender) first */
  readonly daemonCpuSPerGBByNode?: readonly number[];
  readonly hostCpuSPerGB: number;
}

export interface UdpResult extends CpuSample, Accounted {
  readonly packetBytes: number;
  readonly sentPps: number;
  readonly rxPps: number;
  readonly lossPct: number;
  readonly sent: number;
  readonly received: number;
  /** daemon CPU microseconds per packet received */
  readonly daemonCpuUsPerPacket?: number;
}

/**
 * Large UDP as QUIC sends it: UDP_SEGMENT writes of GSO_DATAGRAM-byte datagrams
 * (bench/udp-gso.py), counted where they reach the receiving pod (its eth0 rx_bytes): the
 * tunnel's throughput, not a Python reader's.
 */
export interface UdpGsoResult extends CpuSample, Accounted {
  readonly datagramBytes: number;
  /** UDP payload Gbit/s into the receiving pod over the sender's run time */
  readonly gbps: number;
  readonly sentDatagrams: number;
  /** IP bytes into the pod / (payload + 28) */
  readonly receivedDatagrams: number;
  readonly lossPct: number;
  /** daemon CPU cores busy per Gbit/s received */
  readonly daemonCoresPerGbps?: number;
}

export interface PingResult {
  readonly sent: number;
  readonly received: number;
  readonly p50Us: number;
  readonly p99Us: number;
  /** mean RTT, us (issue 13's ping target is on the average) */
  readonly avgUs: number;
  readonly minUs: number;
  readonly maxUs: number;
}

export interface RoundResult {
  readonly ping: PingResult | Failure;
  readonly tcp1: TcpResult | Failure;
  readonly tcp4: TcpResult | Failure;
  readonly udp64: UdpResult | Failure;
  /** dual-stack runs: TCP 1 stream pod to pod over IPv6, right after tcp1 */
  readonly tcp1v6?: TcpResult | Failure;
  /** absent in results written before this row existed */
  readonly udpGso?: UdpGsoResult | Failure;
  /** CPU of each daemon (n1, n2) with no traffic after the runs; last round only, overlayd setups */
  readonly idle?: IdleCpu[] | Failure;
}

export interface Summary {
  readonly tcp1Gbps?: number;
  readonly tcp4Gbps?: number;
  readonly tcp1Retransmits?: number;
  readonly tcp4Retransmits?: number;
  readonly udpRxPps?: number;
  readonly udpSentPps?: number;
  readonly udpLossPct?: number;
  readonly pingP50Us?: number;
  readonly pingP99Us?: number;
  readonly pingAvgUs?: number;
  readonly tcp1DaemonCpuSPerGB?: number;
  readonly tcp1DaemonCoresPerGbps?: number;
  readonly tcp4DaemonCpuSPerGB?: number;
  readonly tcp4DaemonCoresPerGbps?: number;
  readonly tcp1HostCpuSPerGB?: number;
  readonly tcp4HostCpuSPerGB?: number;
  readonly udpDaemonCpuUsPerPacket?: number;
  /** dual-stack runs: TCP 1 stream over IPv6, and per round IPv6 / IPv4 TCP 1 stream (median of the rounds' ratios) */
  readonly tcp1v6Gbps?: number;
  readonly tcp1v6Retransmits?: number;
  readonly tcp1v6PerV4?: number;
  readonly udpGsoGbps?: number;
  readonly udpGsoLossPct?: number;
  readonly udpGsoDaemonCoresPerGbps?: number;
  /** the busier daemon's idle CPU (self + children), % of one core (median over the rounds that measured it) */
  readonly idleCpuPct?: number;
}

export interface Rss10k {
  readonly routes: number;
  /** ms from spawn to the "forwarding" log line */
  readonly startMs: number;
  /** of the daemon with 10,000 routes, 500 ms after it logged "forwarding", before any traffic */
  readonly memIdle?: MemInfo;
  /** of the same daemon after a ping and a 2 s TCP run through it (the number the target is checked on) */
  readonly mem?: MemInfo;
  readonly pingReceived: number;
  readonly tcpGbps?: number;
  readonly error?: string;
}

export interface SetupResult {
  readonly setup: Setup;
  readonly available: boolean;
  readonly reason?: string;
  readonly rounds: RoundResult[];
  /** medians over the rounds */
  readonly median: Summary;
  /** memory of each daemon (n1, n2), the largest seen at the end of any round; empty for vxlan */
  readonly daemonMem: MemInfo[];
  readonly rss10k?: Rss10k;
}

export interface TwoNodeResults {
  readonly rounds: number;
  readonly seconds: number;
  readonly underlayMtu: number;
  /** the run was dual-stack (tcp1v6 measured) */
  readonly ipv6?: boolean;
  readonly setups: SetupResult[];
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const isFailure = (x: unknown): x is Failure => typeof x === 'object' && x !== null && 'error' in x;

// ------------------------------------------------------------------------------ vxlan --

function vxlanMac(k: number): string {
  return `02:00:00:00:00:${k.toString(16).padStart(2, '0')}`;
}

/**
 * Kernel VXLAN between the node namespaces, the way flannel's vxlan backend wires it: a
 * device with a fixed MAC and the node's subnet address /32; for each other node a permanent
 * neighbour entry (its subnet address -> its MAC), an FDB entry (its MAC -> its underlay
 * address) and a route to its pod subnet via its subnet address, onlink. Pods with v6
 * subnets get the same in IPv6 (the v6 subnet's address /128, neighbour, route), as
 * flannel's dual-stack vxlan does. `underlay6`: over the IPv6 underlay (fd99::K) instead of
 * IPv4. Returns the undo.
 */
function setupVxlan(topo: Topology, underlay6 = false): () => void {
  const ns = topo.netns;
  const dev = 'vxbench';
  const created: string[] = [];
  const undo = () => { for (const n of created.splice(0)) ns.tryExec(n, 'ip', ['link', 'del', dev]); };
  const underlayOf = (n: Topology['nodes'][number]): string => {
    const a = underlay6 ? n.underlayIp6 : n.underlayIp;
    if (a === undefined) throw new Error(`vxlan6: node ${n.index} has no IPv6 underlay address`);
    return a;
  };
  try {
    for (const n of topo.nodes) {
      ns.ip(n.ns, 'link', 'add', dev, 'address', vxlanMac(n.index), 'mtu', String(underlay6 ? VXLAN6_MTU : VXLAN_MTU), 'type', 'vxlan',
        'id', String(VXLAN_VNI), 'local', underlayOf(n), 'dev', 'eth0', 'dstport', String(VXLAN_PORT), 'nolearning');
      created.push(n.ns);
      ns.ip(n.ns, 'addr', 'add', `${n.subnet.split('/')[0]}/32`, 'dev', dev);
      if (n.subnet6 !== '') ns.ip(n.ns, 'addr', 'add', `${n.subnet6.split('/')[0]}/128`, 'dev', dev, 'nodad');
      ns.ip(n.ns, 'link', 'set', dev, 'up');
    }
    for (const n of topo.nodes) {
      for (const o of topo.nodes) {
        if (o === n) continue;
        const gw = o.subnet.split('/')[0] as string;
        ns.ip(n.ns, 'neigh', 'add', gw, 'lladdr', vxlanMac(o.index), 'dev', dev, 'nud', 'permanent');
        ns.exec(n.ns, 'bridge', ['fdb', 'append', vxlanMac(o.index), 'dev', dev, 'dst', underlayOf(o)]);
        ns.ip(n.ns, 'route', 'add', o.subnet, 'via', gw, 'dev', dev, 'onlink');
        if (n.subnet6 !== '' && o.subnet6 !== '') {
          const gw6 = o.subnet6.split('/')[0] as string;
          ns.ip(n.ns, '-6', 'neigh', 'add', gw6, 'lladdr', vxlanMac(o.index), 'dev', dev, 'nud', 'permanent');
          ns.ip(n.ns, '-6', 'route', 'add', o.subnet6, 'via', gw6, 'dev', dev, 'onlink');
        }
      }
    }
  } catch (err) {
    undo();
    throw err;
  }
  return undo;
}

// ---------------------------------------------------------------------------- iperf3 --

interface IperfServer { readonly child: ChildProcess; stop(): void }

async function startIperfServer(topo: Topology, ns: string): Promise<IperfServer> {
  const child = spawn('ip', ['netns', 'exec', ns, 'iperf3', '-s', '-p', String(IPERF_PORT)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr?.on('data', (d: Buffer) => { err += d.toString(); });
  const stop = () => { if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM'); };
  // bounded wait until it listens
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) throw new Error(`iperf3 server exited: ${err}`);
    const r = topo.netns.tryExec(ns, 'ss', ['-Hltn', `sport = :${IPERF_PORT}`]);
    if (r.stdout.includes(`:${IPERF_PORT}`)) return { child, stop };
    await sleep(50);
  }
  stop();
  throw new Error('iperf3 server did not listen within 5 s');
}

interface IperfJson {
  error?: string;
  end?: {
    sum_sent?: { bytes: number; seconds: number; retransmits?: number; packets?: number };
    sum_received?: { bytes: number; seconds: number; bits_per_second: number; packets?: number; lost_packets?: number; lost_percent?: number };
    sum?: { packets?: number; lost_packets?: number; lost_percent?: number; seconds?: number };
  };
}

function iperfClient(topo: Topology, ns: string, dst: string, args: string[], seconds: number): IperfJson {
  const r = topo.netns.tryExec(ns, 'iperf3', ['-c', dst, '-p', String(IPERF_PORT), '-t', String(seconds), '-J', '--connect-timeout', '3000', ...args], (seconds + 30) * 1000);
  let j: IperfJson;
  try {
    j = JSON.parse(r.stdout) as IperfJson;
  } catch {
    throw new Error(`iperf3 exit ${r.status}: ${(r.stderr || r.stdout).trim().slice(0, 300)}`);
  }
  if (j.error) throw new Error(`iperf3: ${j.error}`);
  if (r.status !== 0) throw new Error(`iperf3 exit ${r.status}: ${r.stderr.trim().slice(0, 300)}`);
  return j;
}

async function measured<T>(pids: number[], fn: () => T): Promise<{ value: T; cpu: CpuSample }> {
  const cpu0 = pids.map(processCpuSeconds);
  const h0 = hostCpu();
  const t0 = process.hrtime.bigint();
  const value = fn();
  const wallS = Number(process.hrtime.bigint() - t0) / 1e9;
  const h1 = hostCpu();
  const cpu1 = pids.map(processCpuSeconds);
  let daemonCpuS: number | undefined;
  const byNode: number[] = [];
  if (pids.length > 0) {
    daemonCpuS = 0;
    for (let i = 0; i < pids.length; i++) {
      const a = cpu0[i], b = cpu1[i];
      if (a === undefined || b === undefined) throw new Error(`daemon pid ${pids[i]} exited during the run`);
      daemonCpuS += b - a;
      byNode.push(b - a);
    }
  }
  return { value, cpu: { ...(daemonCpuS !== undefined ? { daemonCpuS, daemonCpuSByNode: byNode } : {}), hostCpuS: h1.busy - h0.busy, hostSoftirqS: h1.softirq - h0.softirq, wallS } };
}

/**
 * Loss accounting of one node: the kernel's UDP counters of its namespace (/proc/net/snmp),
 * the drop counters of its TUN / VXLAN / underlay devices, and, when overlayd runs, the
 * engine counters from `overlayd status --json`. Flat "n1.udp.RcvbufErrors" style keys.
 */
function nodeStats(topo: Topology, k: number, daemon: boolean): Record<string, number> {
  const n = topo.node(k);
  const out: Record<string, number> = {};
  const snmp = topo.netns.tryExec(n.ns, 'cat', ['/proc/net/snmp']).stdout.split('\n').filter((l) => l.startsWith('Udp:'));
  if (snmp.length >= 2) {
    const names = snmp[0]!.split(/\s+/).slice(1);
    const vals = snmp[1]!.split(/\s+/).slice(1).map(Number);
    names.forEach((name, i) => { if (/Errors|NoPorts/.test(name)) out[`n${k}.udp.${name}`] = vals[i] ?? 0; });
  }
  const links = topo.netns.tryExec(n.ns, 'ip', ['-s', '-j', 'link', 'show']);
  try {
    const arr = JSON.parse(links.stdout) as { ifname: string; stats64?: { rx: { dropped: number; errors?: number }; tx: { dropped: number; errors?: number } } }[];
    for (const l of arr) {
      if (!l.stats64 || !['flannel0', 'vxbench', 'eth0'].includes(l.ifname)) continue;
      out[`n${k}.${l.ifname}.rx_dropped`] = l.stats64.rx.dropped;
      out[`n${k}.${l.ifname}.tx_dropped`] = l.stats64.tx.dropped;
    }
  } catch { /* no JSON: leave the device counters out */ }
  if (daemon) {
    const st = topo.netns.tryExec(n.ns, process.execPath, [OVERLAYD_BIN, 'status', '--json'], 10_000);
    try {
      const doc = JSON.parse(st.stdout) as StatusDoc;
      const counters = doc.counters;
      if (counters) for (const [name, v] of Object.entries(flatCounters(counters))) out[`n${k}.daemon.${name}`] = v;
      // offload activity (native engine): tun_gro_writes against packets.tun_written = segments per coalesced write
      const activity = doc.offloads?.activity;
      if (activity) for (const [name, v] of Object.entries(activity)) if (typeof v === 'number') out[`n${k}.daemon.offloads.${name}`] = v;
    } catch { /* daemon gone or no JSON: leave its counters out */ }
  }
  return out;
}

function allStats(topo: Topology, daemon: boolean): Record<string, number> {
  return Object.assign({}, ...topo.nodes.map((n) => nodeStats(topo, n.index, daemon))) as Record<string, number>;
}

/** after - before, the keys that changed */
function deltas(before: Record<string, number>, after: Record<string, number>): Record<string, number> {
  const d: Record<string, number> = {};
  for (const [k, v] of Object.entries(after)) {
    const x = v - (before[k] ?? 0);
    if (x !== 0) d[k] = x;
  }
  return d;
}

/** Runs a test between two snapshots of the loss accounting; the deltas go into its result. */
async function accounted<T extends object>(topo: Topology, daemon: boolean, fn: () => Promise<T>): Promise<T & { counters: Record<string, number> }> {
  const before = allStats(topo, daemon);
  const value = await fn();
  await sleep(200); // packets still in flight when the client stopped
  return { ...value, counters: deltas(before, allStats(topo, daemon)) };
}

/** `family` 6: to pod n2p1's IPv6 address (dual-stack runs). */
async function tcpRun(topo: Topology, pids: number[], streams: number, seconds: number, family: 4 | 6 = 4): Promise<TcpResult> {
  const [p1, p2] = [topo.node(1).pods[0]!, topo.node(2).pods[0]!];
  const dst = family === 6 ? p2.ip6 : p2.ip;
  if (dst === undefined) throw new Error(`pod ${p2.ns} has no IPv6 address`);
  const { value: j, cpu } = await measured(pids, () => iperfClient(topo, p1.ns, dst, ['-P', String(streams)], seconds));
  const rx = j.end?.sum_received;
  if (!rx) throw new Error('iperf3: no sum_received');
  const gb = rx.bytes / 1e9;
  const perGB = cpu.daemonCpuS !== undefined && gb > 0 ? cpu.daemonCpuS / gb : undefined;
  return {
    streams, gbps: rx.bits_per_second / 1e9, bytes: rx.bytes, retransmits: j.end?.sum_sent?.retransmits ?? 0,
    ...cpu,
    ...(perGB !== undefined ? { daemonCpuSPerGB: perGB, daemonCoresPerGbps: perGB / 8 } : {}),
    ...(cpu.daemonCpuSByNode !== undefined && gb > 0 ? { daemonCpuSPerGBByNode: cpu.daemonCpuSByNode.map((c) => c / gb) } : {}),
    hostCpuSPerGB: gb > 0 ? cpu.hostCpuS / gb : NaN,
  };
}

async function udpRun(topo: Topology, pids: number[], seconds: number): Promise<UdpResult> {
  const [p1, p2] = [topo.node(1).pods[0]!, topo.node(2).pods[0]!];
  const bytes = 64;
  const { value: j, cpu } = await measured(pids, () => iperfClient(topo, p1.ns, p2.ip, ['-u', '-l', String(bytes), '-b', '0'], seconds));
  const rx = j.end?.sum_received;
  const tx = j.end?.sum_sent;
  if (!rx || !tx || rx.packets === undefined || rx.lost_packets === undefined) throw new Error('iperf3: no UDP sums');
  const sent = rx.packets;
  const received = Math.max(0, rx.packets - rx.lost_packets);
  return {
    packetBytes: bytes,
    sentPps: (tx.packets ?? sent) / tx.seconds,
    rxPps: received / rx.seconds,
    lossPct: rx.lost_percent ?? (sent > 0 ? (100 * (sent - received)) / sent : 0),
    sent, received, ...cpu,
    ...(cpu.daemonCpuS !== undefined && received > 0 ? { daemonCpuUsPerPacket: (cpu.daemonCpuS / received) * 1e6 } : {}),
  };
}

/** UDP payload bytes per datagram of the large-UDP row: 1400 + 28 fits every tunnel's MTU (VXLAN 1450). */
const GSO_DATAGRAM = 1400;
const UDP_GSO_PY = path.resolve(__dirname, '..', '..', 'bench', 'udp-gso.py');

function podRxBytes(topo: Topology, ns: string): number {
  const v = Number(topo.netns.exec(ns, 'cat', ['/sys/class/net/eth0/statistics/rx_bytes']).trim());
  if (!Number.isFinite(v)) throw new Error(`${ns}: no eth0 rx_bytes`);
  return v;
}

async function udpGsoRun(topo: Topology, pids: number[], seconds: number): Promise<UdpGsoResult> {
  const [p1, p2] = [topo.node(1).pods[0]!, topo.node(2).pods[0]!];
  const port = IPERF_PORT + 1;
  const child = spawn('ip', ['netns', 'exec', p2.ns, 'python3', UDP_GSO_PY, 'sink', String(port), String(seconds + 30)], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  const exited = new Promise<void>((resolve) => child.on('exit', () => resolve()));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`udp-gso.py sink: did not listen within 10 s: ${err.trim()}`)), 10_000);
      child.stderr.on('data', (d: Buffer) => { err += d.toString(); if (err.includes('listening')) { clearTimeout(timer); resolve(); } });
      child.on('exit', (c) => { clearTimeout(timer); reject(new Error(`udp-gso.py sink exited ${c}: ${err.trim()}`)); });
    });
    const rx0 = podRxBytes(topo, p2.ns);
    const { value: r, cpu } = await measured(pids, () => topo.netns.tryExec(p1.ns, 'python3', [UDP_GSO_PY, 'blast', p2.ip, String(port), String(GSO_DATAGRAM), String(seconds)], (seconds + 30) * 1000));
    if (r.status !== 0) throw new Error(`udp-gso.py blast exit ${r.status}: ${r.stderr.trim().slice(0, 300)}`);
    await sleep(300); // datagrams still in flight
    const rxIpBytes = podRxBytes(topo, p2.ns) - rx0;
    const [, sent, txSeconds] = r.stdout.trim().split(' ').map(Number);
    if (sent === undefined || !txSeconds) throw new Error(`udp-gso.py blast: no counts (${r.stdout.trim()})`);
    const received = Math.round(rxIpBytes / (GSO_DATAGRAM + 28));
    const gbps = (received * GSO_DATAGRAM * 8) / txSeconds / 1e9;
    return {
      datagramBytes: GSO_DATAGRAM, gbps, sentDatagrams: sent, receivedDatagrams: received,
      lossPct: sent > 0 ? (100 * Math.max(0, sent - received)) / sent : 0, ...cpu,
      ...(cpu.daemonCpuS !== undefined && gbps > 0 ? { daemonCoresPerGbps: cpu.daemonCpuS / cpu.wallS / gbps } : {}),
    };
  } finally {
    if (child.exitCode === null) child.kill('SIGKILL');
    await exited;
  }
}

function pingRun(topo: Topology, count = PING_COUNT): PingResult {
  const [p1, p2] = [topo.node(1).pods[0]!, topo.node(2).pods[0]!];
  const r = topo.netns.tryExec(p1.ns, 'ping', ['-n', '-c', String(count), '-i', String(PING_INTERVAL_S), '-W', '1', p2.ip], 60_000);
  const times = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]) * 1000);
  if (times.length === 0) throw new Error(`ping: no replies (exit ${r.status}): ${(r.stdout + r.stderr).trim().slice(-300)}`);
  return {
    sent: count, received: times.length,
    p50Us: percentile(times, 50)!, p99Us: percentile(times, 99)!, avgUs: times.reduce((a, b) => a + b, 0) / times.length,
    minUs: Math.min(...times), maxUs: Math.max(...times),
  };
}

async function attempt<T>(fn: () => Promise<T> | T): Promise<T | Failure> {
  try {
    return await fn();
  } catch (err) {
    return { error: (err as Error).message };
  }
}

function summarize(rounds: RoundResult[]): Summary {
  const ok = <T>(xs: (T | Failure)[]) => xs.filter((x): x is T => !isFailure(x));
  const tcp1 = ok(rounds.map((r) => r.tcp1));
  const tcp4 = ok(rounds.map((r) => r.tcp4));
  const udp = ok(rounds.map((r) => r.udp64));
  const ping = ok(rounds.map((r) => r.ping));
  const v6 = rounds.flatMap((r) => (r.tcp1v6 === undefined || isFailure(r.tcp1v6) ? [] : [{ v6: r.tcp1v6, v4: r.tcp1 }]));
  const gso = ok(rounds.map((r) => r.udpGso ?? { error: 'not measured' }));
  const s: Record<string, number | undefined> = {
    tcp1Gbps: median(tcp1.map((x) => x.gbps)),
    tcp4Gbps: median(tcp4.map((x) => x.gbps)),
    tcp1Retransmits: median(tcp1.map((x) => x.retransmits)),
    tcp4Retransmits: median(tcp4.map((x) => x.retransmits)),
    udpRxPps: median(udp.map((x) => x.rxPps)),
    udpSentPps: median(udp.map((x) => x.sentPps)),
    udpLossPct: median(udp.map((x) => x.lossPct)),
    pingP50Us: median(ping.map((x) => x.p50Us)),
    pingP99Us: median(ping.map((x) => x.p99Us)),
    pingAvgUs: median(ping.map((x) => x.avgUs)),
    tcp1DaemonCpuSPerGB: median(tcp1.map((x) => x.daemonCpuSPerGB)),
    tcp1DaemonCoresPerGbps: median(tcp1.map((x) => x.daemonCoresPerGbps)),
    tcp4DaemonCpuSPerGB: median(tcp4.map((x) => x.daemonCpuSPerGB)),
    tcp4DaemonCoresPerGbps: median(tcp4.map((x) => x.daemonCoresPerGbps)),
    tcp1HostCpuSPerGB: median(tcp1.map((x) => x.hostCpuSPerGB)),
    tcp4HostCpuSPerGB: median(tcp4.map((x) => x.hostCpuSPerGB)),
    udpDaemonCpuUsPerPacket: median(udp.map((x) => x.daemonCpuUsPerPacket)),
    tcp1v6Gbps: median(v6.map((x) => x.v6.gbps)),
    tcp1v6Retransmits: median(v6.map((x) => x.v6.retransmits)),
    tcp1v6PerV4: median(v6.flatMap((x) => (isFailure(x.v4) || x.v4.gbps === 0 ? [] : [x.v6.gbps / x.v4.gbps]))),
    udpGsoGbps: median(gso.map((x) => x.gbps)),
    udpGsoLossPct: median(gso.map((x) => x.lossPct)),
    udpGsoDaemonCoresPerGbps: median(gso.map((x) => x.daemonCoresPerGbps)),
    idleCpuPct: median(ok(rounds.map((r) => r.idle ?? { error: 'not measured' })).map((d) => Math.max(...d.map((x) => x.totalPct)))),
  };
  for (const k of Object.keys(s)) if (s[k] === undefined) delete s[k];
  return s as Summary;
}

/** Pod PMTU state from a previous setup would skew the next one: start each from scratch. */
function flushPodRouteCaches(topo: Topology): void {
  for (const n of topo.nodes) {
    for (const p of n.pods) {
      topo.netns.tryExec(p.ns, 'ip', ['route', 'flush', 'cache']);
      if (p.ip6 !== undefined) topo.netns.tryExec(p.ns, 'ip', ['-6', 'route', 'flush', 'cache']);
    }
  }
}

/** Both daemons of an overlayd engine, with the run's static configs; registered for cleanup. */
async function startPair(o: TwoNodeOptions, engine: DaemonSetup, configFor: (k: number) => string): Promise<{ daemons: DaemonHandle[]; stop: () => Promise<void> }> {
  const { topo, janitor } = o;
  const daemons: DaemonHandle[] = [];
  const stopAll = async () => { for (const d of daemons.splice(0)) await stopDaemon(d); };
  const unregister = janitor.add(`overlayd ${engine} daemons`, stopAll);
  try {
    for (const n of topo.nodes) {
      daemons.push(await startDaemon(n.ns, [...daemonArgs(engine), '--iface', 'eth0', '--log-level', 'info',
        '--static-config', configFor(n.index), '--subnet-file', path.join(topo.tmp, `bench-n${n.index}.env`)]));
    }
  } catch (err) {
    await unregister();
    throw err;
  }
  for (const d of daemons) {
    if (processName(d.pid) !== 'node') throw new Error(`pid ${d.pid} is not the overlayd node process (${processName(d.pid)})`);
  }
  return { daemons, stop: unregister };
}

/** A static config for node 1 with ROUTES_10K peers: node 2 plus 9,999 others that never send. */
function config10k(topo: Topology): string {
  const n1 = topo.node(1);
  const others = topo.nodes.filter((n) => n !== n1).map((n) => ({ Subnet: n.subnet, PublicIP: n.underlayIp }));
  const peers = [...others];
  for (let i = 0; peers.length < ROUTES_10K; i++) {
    // 10.100.0.0/24 upwards, clear of the pod subnets (10.244.K.0/24) and the underlay (10.99.0.0/24)
    const a = 100 + (i >> 8);
    peers.push({ Subnet: `10.${a}.${i & 255}.0/24`, PublicIP: `172.16.${(i + 1) >> 8}.${(i + 1) & 255}` });
  }
  const doc = {
    Network: '10.0.0.0/8', SubnetLen: 24, Backend: { Type: 'udp', Port: PORT },
    Subnet: n1.subnet, PublicIP: n1.underlayIp, Peers: peers,
  };
  const file = path.join(topo.tmp, 'static-n1-10k.json');
  writeFileSync(file, JSON.stringify(doc));
  return file;
}

async function rss10k(o: TwoNodeOptions, engine: DaemonSetup): Promise<Rss10k> {
  const { topo } = o;
  const big = config10k(topo);
  const t0 = Date.now();
  let pair: Awaited<ReturnType<typeof startPair>> | undefined;
  let stopServer: (() => Promise<void>) | undefined;
  try {
    pair = await startPair(o, engine, (k) => (k === 1 ? big : topo.staticConfig(k)));
    const startMs = Date.now() - t0;
    await sleep(500);
    const memIdle = processMemory(pair.daemons[0]!.pid);
    const ping = pingRun(topo, 20);
    const server = await startIperfServer(topo, topo.node(2).pods[0]!.ns);
    stopServer = o.janitor.add('iperf3 server', () => server.stop());
    const tcp = await attempt(() => tcpRun(topo, [], 1, 2));
    await sleep(300);
    const mem = processMemory(pair.daemons[0]!.pid);
    return { routes: ROUTES_10K, startMs, ...(memIdle ? { memIdle } : {}), ...(mem ? { mem } : {}), pingReceived: ping.received, ...(isFailure(tcp) ? {} : { tcpGbps: tcp.gbps }) };
  } catch (err) {
    return { routes: ROUTES_10K, startMs: Date.now() - t0, pingReceived: 0, error: (err as Error).message.slice(0, 2000) };
  } finally {
    await stopServer?.();
    await pair?.stop();
  }
}

/** One round of one setup: bring it up, measure, take it down. Throws when it cannot come up. */
async function runRound(o: TwoNodeOptions, setup: Setup, measureIdle: boolean): Promise<{ round: RoundResult; mem: MemInfo[] }> {
  const { topo } = o;
  flushPodRouteCaches(topo);
  let pids: number[] = [];
  let teardown: () => Promise<void>;
  let daemons: DaemonHandle[] = [];
  if (isKernelSetup(setup)) {
    const undo = setupVxlan(topo, setup === 'vxlan6');
    teardown = o.janitor.add('vxlan devices', undo);
  } else {
    const backend = setup === 'direct-routing' ? { DirectRouting: true } : {};
    const pair = await startPair(o, setup, (k) => topo.staticConfig(k, [], backend, setup === 'native-pc' ? [1, 2] : []));
    daemons = pair.daemons;
    pids = daemons.map((d) => d.pid);
    teardown = pair.stop;
    if (setup === 'direct-routing' && !topo.netns.ip(topo.node(1).ns, '-4', 'route', 'show', 'proto', String(OVERLAYD_RT_PROTO)).includes(topo.node(2).subnet)) {
      await teardown();
      throw new Error(`direct-routing: node 1 has no kernel route to ${topo.node(2).subnet}`);
    }
  }
  let stopServer: (() => Promise<void>) | undefined;
  try {
    // a fresh iperf3 server per round: one wedged by a failed test cannot spoil the next
    const server = await startIperfServer(topo, topo.node(2).pods[0]!.ns);
    stopServer = o.janitor.add('iperf3 server', () => server.stop());
    const warm = pingRun(topo, 5); // neighbours resolved, path works (throws when it does not)
    if (warm.received === 0) throw new Error('no ping reply through the overlay');
    const daemon = !isKernelSetup(setup);
    const ping = await attempt(() => pingRun(topo));
    const tcp1 = await attempt(() => accounted(topo, daemon, () => tcpRun(topo, pids, 1, o.seconds)));
    await sleep(300);
    const tcp1v6 = o.ipv6 ? await attempt(() => accounted(topo, daemon, () => tcpRun(topo, pids, 1, o.seconds, 6))) : undefined;
    if (o.ipv6) await sleep(300);
    const tcp4 = await attempt(() => accounted(topo, daemon, () => tcpRun(topo, pids, 4, o.seconds)));
    await sleep(300);
    const udp64 = await attempt(() => accounted(topo, daemon, () => udpRun(topo, pids, o.seconds)));
    await sleep(300);
    const udpGso = await attempt(() => accounted(topo, daemon, () => udpGsoRun(topo, pids, o.seconds)));
    const mem = daemons.map((d) => processMemory(d.pid)).filter((m): m is MemInfo => m !== undefined);
    // no traffic any more (the iperf3 server waits): what the daemons cost when nothing flows
    const idle = measureIdle && pids.length > 0 ? await attempt(async () => { await sleep(1000); return Promise.all(pids.map((p) => idleCpu(p, IDLE_SECONDS))); }) : undefined;
    return { round: { ping, tcp1, tcp4, udp64, udpGso, ...(tcp1v6 !== undefined ? { tcp1v6 } : {}), ...(idle !== undefined && { idle }) }, mem };
  } finally {
    await stopServer?.();
    await teardown();
    await sleep(1000); // let the UDP backlog drain before the next setup's ping
  }
}

/** The first line of an error that says what went wrong (daemon start-up errors carry its log). */
export function headline(err: string): string {
  const lines = err.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  const daemonLine = [...lines].reverse().find((l) => l.startsWith('overlayd:'));
  return (daemonLine ?? lines[0] ?? err).slice(0, 300);
}

function describeRound(r: RoundResult): string {
  const f = (x: unknown, g: (v: never) => string) => (isFailure(x) ? `ERROR(${x.error.slice(0, 80)})` : g(x as never));
  return [
    `ping p50 ${f(r.ping, (p: PingResult) => `${p.p50Us.toFixed(0)} us, avg ${p.avgUs.toFixed(0)} us`)}`,
    `tcp1 ${f(r.tcp1, (t: TcpResult) => `${t.gbps.toFixed(2)} Gbit/s`)}`,
    ...(r.tcp1v6 !== undefined ? [`tcp1 IPv6 ${f(r.tcp1v6, (t: TcpResult) => `${t.gbps.toFixed(2)} Gbit/s`)}`] : []),
    `tcp4 ${f(r.tcp4, (t: TcpResult) => `${t.gbps.toFixed(2)} Gbit/s`)}`,
    `udp64 ${f(r.udp64, (u: UdpResult) => `${(u.rxPps / 1e3).toFixed(0)} kpps rx, ${u.lossPct.toFixed(1)}% loss`)}`,
    `udp-gso ${r.udpGso === undefined ? '-' : f(r.udpGso, (u: UdpGsoResult) => `${u.gbps.toFixed(2)} Gbit/s rx, ${u.lossPct.toFixed(1)}% loss`)}`,
    ...(r.idle === undefined ? [] : [`idle ${f(r.idle, (d: IdleCpu[]) => d.map((x) => `${x.totalPct.toFixed(2)}% (self ${x.selfPct.toFixed(2)} + children ${x.childrenPct.toFixed(2)})`).join(' / '))} of a core`]),
  ].join(', ');
}

/**
 * Rounds are interleaved (round 1 of every setup, then round 2, ...), so that a change of
 * load on the machine during the run skews every setup alike instead of one of them.
 */
export async function runTwoNode(o: TwoNodeOptions): Promise<TwoNodeResults> {
  const { log } = o;
  const state = o.setups.map(({ setup, availability }) => ({
    setup, reason: availability.available ? undefined : (availability.reason ?? 'not available'),
    rounds: [] as RoundResult[], mem: [] as MemInfo[][],
  }));
  for (const st of state) if (st.reason !== undefined) log(`two-node: ${st.setup}: SKIPPED: ${st.reason}`);
  const setups: SetupResult[] = [];
  for (let r = 1; r <= o.rounds; r++) {
    for (const st of state) {
      if (st.reason !== undefined) continue;
      try {
        const { round, mem } = await runRound(o, st.setup, r === o.rounds);
        st.rounds.push(round);
        st.mem.push(mem);
        log(`  round ${r}/${o.rounds} ${st.setup.padEnd(6)}: ${describeRound(round)}`);
      } catch (err) {
        st.reason = `failed in round ${r}: ${(err as Error).message.slice(0, 3000)}`;
        log(`  round ${r}/${o.rounds} ${st.setup.padEnd(6)}: FAILED: ${headline((err as Error).message)}`);
      }
    }
  }
  for (const st of state) {
    if (st.reason !== undefined) {
      setups.push({ setup: st.setup, available: false, reason: st.reason, rounds: st.rounds, median: {}, daemonMem: [] });
      continue;
    }
    let big: Rss10k | undefined;
    if (!isKernelSetup(st.setup) && st.setup !== 'native-nooff' && st.setup !== 'native-q2' && st.setup !== 'native-pc' && st.setup !== 'direct-routing') { // the 10k-route run once per engine
      big = await rss10k(o, st.setup);
      log(`  ${st.setup} with ${ROUTES_10K} routes: ${big.error ? `ERROR ${headline(big.error)}` : `started in ${big.startMs} ms, RSS idle ${big.memIdle?.rssMB.toFixed(1)} MB, after traffic ${big.mem?.rssMB.toFixed(1)} MB (peak ${big.mem?.hwmMB.toFixed(1)}), ping ${big.pingReceived}/20, TCP ${big.tcpGbps?.toFixed(2) ?? 'n/a'} Gbit/s`}`);
    }
    // per daemon (n1, n2): the largest RSS seen after any round
    const daemonMem: MemInfo[] = [];
    for (const mems of st.mem) {
      mems.forEach((m, i) => {
        const cur = daemonMem[i];
        daemonMem[i] = cur === undefined ? m : { rssMB: Math.max(cur.rssMB, m.rssMB), hwmMB: Math.max(cur.hwmMB, m.hwmMB) };
      });
    }
    setups.push({ setup: st.setup, available: true, rounds: st.rounds, median: summarize(st.rounds), daemonMem, ...(big ? { rss10k: big } : {}) });
  }
  return { rounds: o.rounds, seconds: o.seconds, underlayMtu: 1500, ...(o.ipv6 ? { ipv6: true } : {}), setups };
}

export { isFailure };
