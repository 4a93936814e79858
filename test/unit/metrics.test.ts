import t from 'tap';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { createMetrics, type MetricsSource } from '../../src/ops/metrics';
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
  const fams = await families(source(undefined, { etcdConnected: () => undefined, leaseExpiresAt: () => undefined }));
  t.same(fams.find((f) => f.name === 'overlayd_packets_total')?.metrics ?? [], []);
  t.same(fams.find((f) => f.name === 'overlayd_etcd_connected')?.metrics ?? [], []);
  t.equal(fams.find((f) => f.name === 'overlayd_lease_expiry_timestamp_seconds')?.metrics[0]?.value, '0');
});

t.test('overlayd_routes_by_kind: only with DirectRouting; direct and udp add up to overlayd_routes', async (t) => {
  const off = await families(source(undefined));
  t.notOk(off.some((f) => f.name === 'overlayd_routes_by_kind'), 'absent when DirectRouting is off');
  const on = await families(source(undefined, { directRouteCount: () => 1 }));
  const kind = (k: string) => on.find((f) => f.name === 'overlayd_routes_by_kind')?.metrics.find((m) => m.labels?.['kind'] === k)?.value;
  t.equal(kind('direct'), '1');
  t.equal(kind('udp'), '2');
  t.equal(on.find((f) => f.name === 'overlayd_routes')?.metrics[0]?.value, '3', 'the total is unchanged');
});
