import t from 'tap';
import { Registry, collectDefaultMetrics } from 'prom-client';
import parsePrometheusTextFormat from 'parse-prometheus-text-format';
import { defaultMetrics } from '../../src/ops/loop-lag';

const describe = (r: Registry) => r.getMetricsAsArray().map((m) => `${m.name} ${m.type} ${m.help}`).sort();

t.test("the same default metrics as prom-client's (names, types, help texts)", async (t) => {
  const theirs = new Registry();
  collectDefaultMetrics({ register: theirs, prefix: 'x_' });
  const ours = new Registry();
  const lag = defaultMetrics(ours, 'x_');
  if (lag === undefined) throw new Error('prom-client modules not found');
  t.same(describe(ours), describe(theirs));
  t.ok(describe(ours).some((d) => d.startsWith('x_nodejs_eventloop_lag_p99_seconds ')), 'the lag percentiles are there');
  lag.stop();
});

t.test('the event-loop delay is sampled only once read, and stops when nobody reads', async (t) => {
  const reg = new Registry();
  const lag = defaultMetrics(reg, 'y_', 200);
  if (lag === undefined) throw new Error('prom-client modules not found');
  t.notOk(lag.sampling, 'no sampling before the first scrape');
  const value = async (name: string) => Number(parsePrometheusTextFormat(await reg.metrics()).find((f) => f.name === name)?.metrics[0]?.value);
  t.equal(await value('y_nodejs_eventloop_lag_max_seconds'), 0, 'first scrape: nothing sampled yet, 0');
  t.ok(lag.sampling, 'sampling after a scrape');
  // bounded wait until the 10 ms sampler recorded something
  let max = 0;
  for (let i = 0; i < 100 && max === 0; i++) {
    await new Promise((r) => setTimeout(r, 30));
    max = await value('y_nodejs_eventloop_lag_max_seconds');
  }
  t.ok(max > 0, `a later scrape reports the sampled delay (max ${max} s)`);
  // no scrape any more: sampling stops after the idle time (bounded wait)
  for (let i = 0; i < 200 && lag.sampling; i++) await new Promise((r) => setTimeout(r, 50));
  t.notOk(lag.sampling, 'sampling stopped with no reader');
  await value('y_nodejs_eventloop_lag_max_seconds');
  t.ok(lag.sampling, 'the next scrape starts it again');
  lag.stop();
  t.notOk(lag.sampling);
});
