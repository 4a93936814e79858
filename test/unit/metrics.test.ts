import t from 'tap';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { createMetrics, statusCounters, statusOffloads, type MetricsSource } from '../../src/ops/metrics';
import { zeroCounters, type EngineCounters } from '../../src/dataplane/engine';

function source(queues: EngineCounters[] | undefined, over: Partial<MetricsSource> = {}): MetricsSource {
  return {
    engineKind: () => (queues ? 'native' : undefined),
    queueCounters: () => queues,
    routeCount: () => 3,
    leaseExpiresAt: () => 1_800_000_000_000,
    etcdConnected: () => true,
    watchResyncs: () => 2,
    ...over,
  };
}

async function families(src: MetricsSource) {
  return parsePrometheusTextFormat(await createMetrics(src).metrics());
}

t.test('per-queue counters with engine and queue labels, computed at scrape time', async (t) => {
  const q0 = { ...zeroCounters(), tx: 5, drop_spoofed: 1 };
  const q1 = { ...zeroCounters(), tx: 7, drop_spoofed: 4 };
  const queues = [q0, q1];
  const fams = await families(source(queues));
  const sample = (name: string, labels: Record<string, string>) => fams.find((f) => f.name === name)?.metrics
    .find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))?.value;
  t.equal(sample('overlayd_packets_total', { engine: 'native', queue: '0', direction: 'udp_sent' }), '5');
  t.equal(sample('overlayd_packets_total', { engine: 'native', queue: '1', direction: 'udp_sent' }), '7');
  t.equal(sample('overlayd_drops_total', { queue: '1', reason: 'spoofed' }), '4');
  t.equal(sample('overlayd_routes', {}), '3');
  t.equal(sample('overlayd_lease_expiry_timestamp_seconds', {}), '1800000000');
  t.equal(sample('overlayd_etcd_connected', {}), '1');
  t.equal(sample('overlayd_watch_resyncs_total', {}), '2');
  q1.tx = 9;
  const again = await families(source(queues));
  t.equal(again.find((f) => f.name === 'overlayd_packets_total')?.metrics.find((m) => m.labels?.['queue'] === '1' && m.labels?.['direction'] === 'udp_sent')?.value, '9', 'read anew on every scrape');
});

t.test('no engine yet, static source: no packet samples, no etcd gauge', async (t) => {
  const { etcdConnected: _none, ...staticSource } = source(undefined, { leaseExpiresAt: () => undefined });
  const fams = await families(staticSource);
  t.same(fams.find((f) => f.name === 'overlayd_packets_total')?.metrics ?? [], []);
  t.same(fams.find((f) => f.name === 'overlayd_etcd_connected')?.metrics ?? [], []);
  t.equal(fams.find((f) => f.name === 'overlayd_lease_expiry_timestamp_seconds')?.metrics[0]?.value, '0');
});

t.test('overlayd_routes_by_kind: only with DirectRouting; direct and udp add up to overlayd_routes', async (t) => {
  const off = await families(source(undefined));
  t.same(off.find((f) => f.name === 'overlayd_routes_by_kind')?.metrics ?? [], [], 'no samples when DirectRouting is off (no source)');
  const offLater = await families(source(undefined, { directRouteCount: () => undefined }));
  t.same(offLater.find((f) => f.name === 'overlayd_routes_by_kind')?.metrics ?? [], [], 'no samples when DirectRouting is off (source says undefined)');
  const on = await families(source(undefined, { directRouteCount: () => 1 }));
  const kind = (k: string) => on.find((f) => f.name === 'overlayd_routes_by_kind')?.metrics.find((m) => m.labels?.['kind'] === k)?.value;
  t.equal(kind('direct'), '1');
  t.equal(kind('udp'), '2');
  t.equal(on.find((f) => f.name === 'overlayd_routes')?.metrics[0]?.value, '3', 'the total is unchanged');
});

t.test('process metrics carry one prefix: overlayd_process_*, never overlayd_process_process_*', async (t) => {
  const names = (await families(source(undefined))).map((f) => f.name);
  t.ok(names.includes('overlayd_process_cpu_seconds_total'), 'overlayd_process_cpu_seconds_total');
  t.ok(names.includes('overlayd_process_resident_memory_bytes'), 'overlayd_process_resident_memory_bytes');
  t.same(names.filter((n) => n.includes('process_process')), [], 'no double prefix');
});

t.test('status counters and offloads use the words of the /metrics labels', async (t) => {
  const q0 = { ...zeroCounters(), tx: 5, tun_rx: 6, rx_bytes: 100, drop_spoofed: 1, icmp_sent: 2, tx_error: 3 };
  const q1 = { ...zeroCounters(), tx: 7, drop_spoofed: 4 };
  const offloads = { tun: true, udpGso: false, udpGro: true, fallbacks: { udpGso: 1, tunGro: 0 }, reenables: { udpGso: 1, tunGro: 0 }, activity: { tunGsoReads: 0, tunUsoReads: 0, tunGroWrites: 0, udpGsoSends: 0, udpGroRecvs: 0 }, partialChecksums: { enabled: true, sent: 9, received: 4 } };
  const fams = await families(source([q0, q1], { offloads: () => offloads }));
  const labels = (name: string, label: string) => new Set(fams.find((f) => f.name === name)?.metrics.map((m) => m.labels?.[label]));
  const c = statusCounters([q0, q1]);
  t.same(new Set(Object.keys(c.packets)), labels('overlayd_packets_total', 'direction'), 'packets: the direction labels');
  t.same(new Set(Object.keys(c.bytes)), labels('overlayd_bytes_total', 'direction'), 'bytes: the direction labels');
  t.same(new Set(Object.keys(c.drops)), labels('overlayd_drops_total', 'reason'), 'drops: the reason labels');
  t.equal(c.packets['udp_sent'], 12, 'summed over queues');
  t.equal(c.packets['tun_read'], 6);
  t.equal(c.bytes['udp_received'], 100);
  t.equal(c.drops['spoofed'], 5);
  t.equal(c.icmp_errors_sent, 2);
  t.equal(c.tx_errors, 3);
  t.ok(fams.some((f) => f.name === 'overlayd_icmp_errors_sent_total') && fams.some((f) => f.name === 'overlayd_tx_errors_total'), 'the metric names of the two scalars');
  const o = statusOffloads(offloads);
  const { fallbacks, reenables, activity: _activity, partial_checksums: _partial, ...enabled } = o;
  t.same(new Set(Object.keys(enabled)), labels('overlayd_offload_enabled', 'offload'), 'offloads: the offload labels');
  t.same(new Set(Object.keys(fallbacks)), labels('overlayd_offload_fallbacks_total', 'offload'), 'fallbacks: the offload labels');
  t.same(new Set(Object.keys(reenables)), labels('overlayd_offload_reenables_total', 'offload'), 'reenables: the offload labels');
  t.same(o, { tun: true, udp_gso: false, udp_gro: true, fallbacks: { udp_gso: 1, tun_gro: 0 }, reenables: { udp_gso: 1, tun_gro: 0 }, activity: { tun_gso_reads: 0, tun_uso_reads: 0, tun_gro_writes: 0, udp_gso_sends: 0, udp_gro_recvs: 0 }, partial_checksums: { enabled: true, sent: 9, received: 4 } });
  const pc = fams.find((f) => f.name === 'overlayd_partial_checksums_total')?.metrics ?? [];
  t.same(pc.map((m) => [m.labels?.['direction'], m.value]).sort(), [['received', '4'], ['sent', '9']], 'overlayd_partial_checksums_total{direction}: the status figures');
});

t.test('overlayd_routes6{underlay}: only in a dual-stack network', async (t) => {
  const v6 = await families(source(undefined, { routes6ByUnderlay: () => ({ ipv6: 2, ipv4: 1 }) }));
  const m = v6.find((f) => f.name === 'overlayd_routes6')?.metrics ?? [];
  t.same(m.map((x) => [x.labels?.['underlay'], x.value]).sort(), [['ipv4', '1'], ['ipv6', '2']]);
  const v4 = await families(source(undefined, { routes6ByUnderlay: () => undefined }));
  t.same(v4.find((f) => f.name === 'overlayd_routes6')?.metrics ?? [], [], 'IPv4-only: no samples');
});
