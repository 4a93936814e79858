/**
 * Prometheus metrics (prom-client), computed at scrape time from the engine's counters and
 * the route source's state: nothing is updated per packet here.
 */
import { Counter, Gauge, Registry } from 'prom-client';
import { defaultMetrics } from './loop-lag';
import { sumCounters, type EngineCounters, type OffloadState } from '../dataplane/engine';
import type { StatusCounters, StatusOffloads } from './status-types';

/** What the daemon exposes to the metrics collector; read at scrape time. */
export interface MetricsSource {
  engineKind(): string | undefined;
  /** per forwarding queue */
  queueCounters(): EngineCounters[] | undefined;
  routeCount(): number;
  /**
   * of routeCount(), the peers reached by a kernel route, not the tunnel; undefined unless
   * DirectRouting is on (known only once the network config is read, after the registry exists)
   */
  directRouteCount?(): number | undefined;
  /** offloads in force (undefined before the engine runs) */
  offloads?(): OffloadState | undefined;
  /** ms since epoch, undefined when the lease does not expire (static config) */
  leaseExpiresAt(): number | undefined;
  /** only with an etcd route source (the gauge exists only then); undefined before it connects */
  etcdConnected?(): boolean | undefined;
  watchResyncs(): number;
  /** times the periodic firewall check put missing rules back */
  firewallRepairs?(): number;
  /** false while the etcd member talked to has no leader; undefined for the static source */
  etcdLeader?(): boolean | undefined;
  /** ms since epoch of the last re-list; undefined before any */
  lastResyncAt?(): number | undefined;
  /** IPv6 peer routes by the underlay they ride; undefined in an IPv4-only network */
  routes6ByUnderlay?(): { ipv6: number; ipv4: number } | undefined;
}

/**
 * engine counter -> label value of its metric. These are the words of /metrics and of the
 * status document's counters (statusCounters below): one mapping for both.
 */
const PACKETS: Partial<Record<keyof EngineCounters, string>> = {
  tun_rx: 'tun_read', tx: 'udp_sent', rx: 'udp_received', tun_tx: 'tun_written',
};
const BYTES: Partial<Record<keyof EngineCounters, string>> = { tx_bytes: 'udp_sent', rx_bytes: 'udp_received' };
const DROPS: Partial<Record<keyof EngineCounters, string>> = {
  drop_no_route: 'no_route', drop_ttl: 'ttl', drop_malformed: 'malformed', drop_unknown_peer: 'unknown_peer',
  drop_spoofed: 'spoofed', drop_wrong_dst: 'wrong_dst', drop_too_big: 'too_big', drop_ring_full: 'ring_full',
  drop_icmp_ratelimit: 'icmp_ratelimit',
};

export function createMetrics(src: MetricsSource): Registry {
  const registry = new Registry();
  // prom-client's default metrics are named process_* / nodejs_*: the prefix makes overlayd_process_*
  // (the event-loop delay sampled only while scraped: loop-lag.ts)
  defaultMetrics(registry, 'overlayd_');
  const perEngine = (c: Counter<string>, map: Partial<Record<keyof EngineCounters, string>>, label: string) => {
    c.reset();
    const queues = src.queueCounters();
    const engine = src.engineKind();
    if (!queues || !engine) return;
    queues.forEach((counters, q) => {
      for (const [name, value] of Object.entries(map) as [keyof EngineCounters, string][]) {
        c.inc({ engine, queue: String(q), [label]: value }, counters[name]);
      }
    });
  };
  const perEngineOne = (c: Counter<string>, name: keyof EngineCounters) => {
    c.reset();
    const queues = src.queueCounters();
    const engine = src.engineKind();
    if (queues && engine) queues.forEach((counters, q) => c.inc({ engine, queue: String(q) }, counters[name]));
  };
  new Counter({
    name: 'overlayd_firewall_repairs_total', help: 'Times the periodic check found FORWARD accept or masquerade rules missing and put them back', registers: [registry],
    collect() { this.reset(); this.inc(src.firewallRepairs?.() ?? 0); },
  });
  new Counter({
    name: 'overlayd_packets_total', help: 'Packets by direction', labelNames: ['engine', 'queue', 'direction'], registers: [registry],
    collect() { perEngine(this, PACKETS, 'direction'); },
  });
  new Counter({
    name: 'overlayd_bytes_total', help: 'UDP payload bytes by direction', labelNames: ['engine', 'queue', 'direction'], registers: [registry],
    collect() { perEngine(this, BYTES, 'direction'); },
  });
  new Counter({
    name: 'overlayd_drops_total', help: 'Packets dropped, by reason', labelNames: ['engine', 'queue', 'reason'], registers: [registry],
    collect() { perEngine(this, DROPS, 'reason'); },
  });
  new Counter({
    name: 'overlayd_icmp_errors_sent_total', help: 'ICMP errors generated (net unreachable, time exceeded)', labelNames: ['engine', 'queue'], registers: [registry],
    collect() { perEngineOne(this, 'icmp_sent'); },
  });
  new Counter({
    name: 'overlayd_tx_errors_total', help: 'UDP sends that failed', labelNames: ['engine', 'queue'], registers: [registry],
    collect() { perEngineOne(this, 'tx_error'); },
  });
  new Gauge({
    name: 'overlayd_offload_enabled', help: '1 while the offload is in force (asked for, taken by the kernel, never refused since)', labelNames: ['offload'], registers: [registry],
    collect() {
      this.reset();
      const o = src.offloads?.();
      if (o === undefined) return;
      this.set({ offload: 'tun' }, o.tun ? 1 : 0);
      this.set({ offload: 'udp_gso' }, o.udpGso ? 1 : 0);
      this.set({ offload: 'udp_gro' }, o.udpGro ? 1 : 0);
    },
  });
  /** a per-offload run-time count: fallbacks (refused) or reenables (back after the back-off) */
  const offloadCounter = (name: string, help: string, which: 'fallbacks' | 'reenables') => new Counter({
    name, help, labelNames: ['offload'], registers: [registry],
    collect() {
      this.reset();
      const o = src.offloads?.();
      if (o === undefined) return;
      this.inc({ offload: 'udp_gso' }, o[which].udpGso);
      this.inc({ offload: 'tun_gro' }, o[which].tunGro);
    },
  });
  offloadCounter('overlayd_offload_fallbacks_total', 'Times the kernel refused an offload at run time (that queue went on without it)', 'fallbacks');
  offloadCounter('overlayd_offload_reenables_total', 'Times an offload refused at run time came back on after its back-off', 'reenables');
  new Counter({
    name: 'overlayd_partial_checksums_total',
    help: 'Inner TCP/UDP checksums left partial between overlayd peers (--partial-checksums): datagrams sent so, packets received so',
    labelNames: ['direction'], registers: [registry],
    collect() {
      this.reset();
      const p = src.offloads?.()?.partialChecksums;
      if (p === undefined) return;
      this.inc({ direction: 'sent' }, p.sent);
      this.inc({ direction: 'received' }, p.received);
    },
  });
  new Gauge({
    name: 'overlayd_routes', help: 'Peer routes installed in the data plane', registers: [registry],
    collect() { this.set(src.routeCount()); },
  });
  // samples only with DirectRouting on
  new Gauge({
    name: 'overlayd_routes_by_kind', help: 'Peer routes by path: direct (kernel route on the underlay, DirectRouting) or udp (the tunnel)', labelNames: ['kind'], registers: [registry],
    collect() {
      this.reset();
      const direct = src.directRouteCount?.();
      if (direct === undefined) return;
      this.set({ kind: 'direct' }, direct);
      this.set({ kind: 'udp' }, src.routeCount() - direct);
    },
  });
  // samples only in a dual-stack network
  new Gauge({
    name: 'overlayd_routes6', help: 'IPv6 peer routes (dual-stack) installed in the data plane, by the underlay inner IPv6 rides to the peer', labelNames: ['underlay'], registers: [registry],
    collect() {
      this.reset();
      const n = src.routes6ByUnderlay?.();
      if (n === undefined) return;
      this.set({ underlay: 'ipv6' }, n.ipv6);
      this.set({ underlay: 'ipv4' }, n.ipv4);
    },
  });
  new Gauge({
    name: 'overlayd_lease_expiry_timestamp_seconds', help: 'When this node\'s subnet lease expires unless renewed (0: never)', registers: [registry],
    collect() { this.set(Math.round((src.leaseExpiresAt() ?? 0) / 1000)); },
  });
  // only where there is an etcd connection to speak of (not with a static config)
  const etcdConnected = src.etcdConnected?.bind(src);
  if (etcdConnected !== undefined) {
    new Gauge({
      name: 'overlayd_etcd_connected', help: '1 while the etcd connection is up', registers: [registry],
      collect() { this.set(etcdConnected() ? 1 : 0); },
    });
    new Gauge({
      name: 'overlayd_etcd_leader', help: '1 while the etcd member talked to has a leader (0: cut off from its cluster)', registers: [registry],
      collect() { this.set(src.etcdLeader?.() === false ? 0 : 1); },
    });
    new Gauge({
      name: 'overlayd_etcd_last_resync_timestamp_seconds', help: 'When the leases were last re-listed from etcd (0: not yet)', registers: [registry],
      collect() { this.set(Math.round((src.lastResyncAt?.() ?? 0) / 1000)); },
    });
  }
  new Counter({
    name: 'overlayd_watch_resyncs_total', help: 'Times the lease watch broke and the route table was re-listed from etcd', registers: [registry],
    collect() { this.reset(); this.inc(src.watchResyncs()); },
  });
  return registry;
}

const pick = (c: EngineCounters, map: Partial<Record<keyof EngineCounters, string>>): Record<string, number> =>
  Object.fromEntries((Object.entries(map) as [keyof EngineCounters, string][]).map(([name, label]) => [label, c[name]]));

/** Per-queue engine counters summed, in the words of /metrics (see StatusCounters). */
export function statusCounters(queues: readonly EngineCounters[]): StatusCounters {
  const c = sumCounters(queues);
  return { packets: pick(c, PACKETS), bytes: pick(c, BYTES), drops: pick(c, DROPS), icmp_errors_sent: c.icmp_sent, tx_errors: c.tx_error };
}

/** Offload state in the words of the `offload` label of /metrics. */
export function statusOffloads(o: OffloadState): StatusOffloads {
  const a = o.activity;
  return {
    tun: o.tun, udp_gso: o.udpGso, udp_gro: o.udpGro, fallbacks: { udp_gso: o.fallbacks.udpGso, tun_gro: o.fallbacks.tunGro },
    reenables: { udp_gso: o.reenables.udpGso, tun_gro: o.reenables.tunGro },
    activity: { tun_gso_reads: a.tunGsoReads, tun_uso_reads: a.tunUsoReads, tun_gro_writes: a.tunGroWrites, udp_gso_sends: a.udpGsoSends, udp_gro_recvs: a.udpGroRecvs },
    partial_checksums: { ...o.partialChecksums },
  };
}
