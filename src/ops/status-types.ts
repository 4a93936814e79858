/**
 * The status document: the one contract between the daemon (GET /status on its status
 * socket and on --metrics-addr) and `overlayd status`. JSON, produced by Daemon.status().
 *
 * Adding a field: add it (optional, so older daemons still parse) to StatusDoc here, fill it
 * in the daemon, and, if people should see it, add one line to STATUS_LINES below. Nothing
 * else needs to change.
 */

import type { FirewallStatus } from '../net/firewall';

/**
 * Where the daemon is in its life. The `waiting for …` phases carry what is waited for:
 * `waiting for etcd at <endpoints>`, `waiting for <prefix>/config`.
 */
export type Phase =
  | 'starting'
  | `waiting for etcd at ${string}`
  | `waiting for ${string}/config`
  | 'acquiring the subnet lease'
  | 'configuring the data plane'
  | 'forwarding'
  | 'shutting down';

export interface StatusRoute {
  subnet: string;
  publicIp: string;
  /** seconds since this route was installed; null when unknown */
  ageSeconds: number | null;
  /** how packets to this subnet leave: a kernel route on the underlay (DirectRouting) or the UDP tunnel */
  via?: 'direct' | 'udp';
}

/** One IPv6 peer route (dual-stack) and the underlay inner IPv6 rides to it. */
export interface StatusRoute6 {
  subnet: string;
  publicIp: string;
  /** the peer's PublicIPv6 when inner IPv6 rides the IPv6 underlay; null: over IPv4 to publicIp */
  publicIpv6: string | null;
  underlay: 'ipv6' | 'ipv4';
  /** seconds since this route was installed; null when unknown */
  ageSeconds: number | null;
}

/** Offloads in force, keyed by the `offload` label of overlayd_offload_enabled. */
export interface StatusOffloads {
  tun: boolean;
  udp_gso: boolean;
  udp_gro: boolean;
  /** keyed by the `offload` label of overlayd_offload_fallbacks_total */
  fallbacks: { udp_gso: number; tun_gro: number };
  /** keyed by the `offload` label of overlayd_offload_reenables_total: back on after a run-time refusal's back-off */
  reenables: { udp_gso: number; tun_gro: number };
  /** how much they did (no metric): super-packets read from / written to the TUN, UDP_SEGMENT sends, UDP_GRO receives of several datagrams */
  activity: { tun_gso_reads: number; tun_uso_reads: number; tun_gro_writes: number; udp_gso_sends: number; udp_gro_recvs: number };
  /** --partial-checksums on here; datagrams sent with the inner checksum partial, and packets received so (overlayd_partial_checksums_total{direction}) */
  partial_checksums: { enabled: boolean; sent: number; received: number };
}

/**
 * Forwarding counters summed over queues, in the words of /metrics:
 * packets = overlayd_packets_total{direction}, bytes = overlayd_bytes_total{direction},
 * drops = overlayd_drops_total{reason}; packets unless named bytes.
 */
export interface StatusCounters {
  packets: Record<string, number>;
  bytes: Record<string, number>;
  drops: Record<string, number>;
  /** overlayd_icmp_errors_sent_total */
  icmp_errors_sent: number;
  /** overlayd_tx_errors_total */
  tx_errors: number;
}

/** The counters as one flat map: "packets.udp_sent", "bytes.udp_received", "drops.no_route", "icmp_errors_sent", "tx_errors". */
export function flatCounters(c: StatusCounters): Record<string, number> {
  const out: Record<string, number> = {};
  for (const group of ['packets', 'bytes', 'drops'] as const) for (const [k, v] of Object.entries(c[group])) out[`${group}.${k}`] = v;
  out['icmp_errors_sent'] = c.icmp_errors_sent;
  out['tx_errors'] = c.tx_errors;
  return out;
}

export interface StatusDoc {
  version: string;
  pid: number;
  uptimeSeconds: number;
  phase: Phase;
  /** true while forwarding with a valid lease (what /healthz answers 200 for) */
  healthy: boolean;
  /** why not healthy; absent when healthy */
  reason?: string;
  ready: boolean;
  source: 'static' | 'etcd';
  network: {
    network: string;
    port: number;
    /** IPv6Network of a dual-stack network (EnableIPv6); absent when IPv4-only */
    network6?: string;
  } | null;
  lease: {
    subnet: string;
    publicIp: string;
    /** this node's IPv6 subnet (dual-stack); absent when IPv4-only */
    subnet6?: string;
    /** this node's PublicIPv6 as written in the lease (dual-stack); null when it has none */
    publicIpv6?: string | null;
    /** ISO 8601; null when the lease never expires (static config) */
    expiresAt: string | null;
    valid: boolean;
  } | null;
  /** null with a static config */
  etcd: {
    endpoints: string[];
    connected: boolean;
    /** false while the member talked to has no leader (cut off from its cluster); null before the first answer */
    leader?: boolean | null;
    /** watch breaks and periodic re-lists */
    resyncs: number;
    /** ISO 8601 of the last re-list; null before any */
    lastResync?: string | null;
  } | null;
  tun: { name: string; address: string; mtu: number } | null;
  engine: string;
  offloads: StatusOffloads | null;
  /** FORWARD accept and masquerade rules (src/net/firewall.ts); null before they are set up */
  firewall?: FirewallStatus | null;
  routes: StatusRoute[];
  /** IPv6 peer routes (dual-stack); absent when IPv4-only */
  routes6?: StatusRoute6[];
  counters: StatusCounters | null;
  /** bytes (process.memoryUsage()) */
  memory: NodeJS.MemoryUsage;
}

/** One line of the human status: a label and how to render it (null/undefined: line left out). */
export type StatusLine = readonly [label: string, render: (s: StatusDoc) => string | null | undefined];

const yesNo = (b: boolean) => (b ? 'yes' : 'no');
const kv = (o: Record<string, number>) => Object.entries(o).map(([k, v]) => `${k} ${v}`).join(', ');

/** The human `overlayd status` lines, in order. Counters use the same words as /metrics. */
export const STATUS_LINES: readonly StatusLine[] = [
  ['health', (s) => (s.healthy ? 'ok' : `UNHEALTHY: ${s.reason ?? 'unknown'}`)],
  ['phase', (s) => s.phase],
  ['daemon', (s) => `pid ${s.pid}, overlayd ${s.version}, up ${s.uptimeSeconds}s, engine ${s.engine}, route source ${s.source}`],
  ['network', (s) => s.network && `${s.network.network}  udp port ${s.network.port}`],
  ['lease', (s) => s.lease && `${s.lease.subnet} -> ${s.lease.publicIp}  ${s.lease.valid ? 'valid' : 'NOT VALID'}${s.lease.expiresAt ? `, expires ${s.lease.expiresAt}` : ', never expires'}`],
  ['network6', (s) => s.network?.network6],
  ['lease6', (s) => s.lease?.subnet6 && `${s.lease.subnet6} -> ${s.lease.publicIpv6 ?? `${s.lease.publicIp} (no PublicIPv6)`}`],
  ['etcd', (s) => s.etcd && `${s.etcd.connected ? 'connected' : 'NOT CONNECTED'}${s.etcd.leader === false ? ', MEMBER HAS NO LEADER' : ''} (${s.etcd.endpoints.join(',')}), resyncs ${s.etcd.resyncs}${s.etcd.lastResync ? `, last re-list ${s.etcd.lastResync}` : ''}`],
  ['tun', (s) => s.tun && `${s.tun.name} ${s.tun.address}/32 mtu ${s.tun.mtu}`],
  ['offloads', (s) => s.offloads && `tun ${yesNo(s.offloads.tun)}, udp_gso ${yesNo(s.offloads.udp_gso)}, udp_gro ${yesNo(s.offloads.udp_gro)}; fallbacks ${kv(s.offloads.fallbacks)}; reenables ${kv(s.offloads.reenables)}`],
  ['csum', (s) => {
    const p = s.offloads?.partial_checksums;
    // an older daemon's status has no such field
    return p ? `partial ${yesNo(p.enabled)}; sent ${p.sent}, received ${p.received}` : null;
  }],
  ['firewall', (s) => s.firewall && `forward rules ${s.firewall.forwardRules ? (s.firewall.forward.length === 0 ? 'on (no FORWARD drop found)' : s.firewall.forward.map((f) => `${f.backend} ${f.chain} ${f.present ? 'ok' : 'MISSING'}`).join(', ')) : 'off'}; masquerade ${s.firewall.masq.enabled ? (s.firewall.masq.present ? 'on' : 'MISSING') : 'off'}; repairs ${s.firewall.repairs}${s.firewall.lastError ? `; last error: ${s.firewall.lastError}` : ''}`],
  ['packets', (s) => s.counters && kv(s.counters.packets)],
  ['bytes', (s) => s.counters && kv(s.counters.bytes)],
  ['drops', (s) => s.counters && kv(s.counters.drops)],
  ['errors', (s) => s.counters && `icmp_errors_sent ${s.counters.icmp_errors_sent}, tx_errors ${s.counters.tx_errors}`],
];

/** The human rendering of a status document (`overlayd status` without --json). */
export function formatStatus(s: StatusDoc): string {
  const out: string[] = [];
  for (const [label, render] of STATUS_LINES) {
    const text = render(s);
    if (text !== undefined && text !== null) out.push(`${`${label}:`.padEnd(10)}${text}`);
  }
  out.push(`${'routes:'.padEnd(10)}${s.routes.length}`);
  for (const r of s.routes) out.push(`  ${r.subnet.padEnd(20)} via ${r.publicIp.padEnd(16)} age ${r.ageSeconds ?? '?'}s${r.via === 'direct' ? '  direct' : ''}`);
  if (s.routes6) {
    out.push(`${'routes6:'.padEnd(10)}${s.routes6.length}`);
    for (const r of s.routes6) out.push(`  ${r.subnet.padEnd(28)} via ${(r.publicIpv6 ?? r.publicIp).padEnd(16)} (${r.underlay} underlay) age ${r.ageSeconds ?? '?'}s`);
  }
  return out.join('\n') + '\n';
}
