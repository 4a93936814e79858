/**
 * prom-client's default process metrics, with the event-loop delay sampled only while
 * someone reads the metrics.
 *
 * prom-client's collectDefaultMetrics() enables perf_hooks.monitorEventLoopDelay() at 10 ms
 * resolution for the life of the process: a timer that wakes the main thread 100 times a
 * second even when nobody scrapes /metrics. Measured on an idle daemon (bench/idle-probe.ts,
 * native engine, etcd, no traffic): that timer was 0.5% of a core of its 0.7-1.1%. Here the
 * same metrics under the same names (`<prefix>nodejs_eventloop_lag_*_seconds`, same help
 * texts and resolution) come from a histogram that is enabled by a scrape and disabled again
 * when no scrape came for `idleMs`: between scrapes of a regular reader it samples as
 * prom-client does; with no reader it costs no wakeup. The first scrape after a pause reports
 * the lag gauges (min, max, mean, percentiles) as 0: there was nothing sampled. The other
 * default metrics are prom-client's own modules, unchanged (all are computed at scrape time,
 * or, for GC durations, from GC events).
 *
 * JS main thread.
 */
import { monitorEventLoopDelay, type IntervalHistogram } from 'node:perf_hooks';
import { collectDefaultMetrics, Gauge, type Registry } from 'prom-client';

/** prom-client's default eventLoopMonitoringPrecision, ms */
export const LOOP_LAG_RESOLUTION_MS = 10;
/** the histogram stops sampling when no scrape came for this long, ms (longer than any usual scrape interval) */
export const LOOP_LAG_IDLE_MS = 5 * 60_000;

/** prom-client's module for one default metric: registers it (lib/metrics/<name>.js). */
type DefaultMetricModule = (registry: Registry, config: { prefix: string }) => void;

/** The event-loop delay gauges, sampling while read. */
export class LoopLag {
  private histogram: IntervalHistogram | undefined;
  private idleTimer: NodeJS.Timeout | undefined;
  private lastRead = 0;

  constructor(registry: Registry, prefix: string, private readonly idleMs = LOOP_LAG_IDLE_MS) {
    const gauge = (name: string, help: string, collect?: () => void) =>
      new Gauge({ name: `${prefix}nodejs_eventloop_${name}`, help, registers: [registry], ...(collect && { collect }) });
    const lag = gauge('lag_seconds', 'Lag of event loop in seconds.', () => {
      const start = process.hrtime.bigint();
      setImmediate(() => lag.set(Number(process.hrtime.bigint() - start) / 1e9));
      const h = this.read();
      const ns = (v: number | undefined) => (h === undefined || h.count === 0 || v === undefined ? 0 : v / 1e9);
      min.set(ns(h?.min));
      max.set(ns(h?.max));
      mean.set(ns(h?.mean));
      stddev.set(ns(h?.stddev));
      p50.set(ns(h?.percentile(50)));
      p90.set(ns(h?.percentile(90)));
      p99.set(ns(h?.percentile(99)));
      h?.reset();
    });
    const min = gauge('lag_min_seconds', 'The minimum recorded event loop delay.');
    const max = gauge('lag_max_seconds', 'The maximum recorded event loop delay.');
    const mean = gauge('lag_mean_seconds', 'The mean of the recorded event loop delays.');
    const stddev = gauge('lag_stddev_seconds', 'The standard deviation of the recorded event loop delays.');
    const p50 = gauge('lag_p50_seconds', 'The 50th percentile of the recorded event loop delays.');
    const p90 = gauge('lag_p90_seconds', 'The 90th percentile of the recorded event loop delays.');
    const p99 = gauge('lag_p99_seconds', 'The 99th percentile of the recorded event loop delays.');
  }

  /** true while the histogram samples (a scrape came within idleMs) */
  get sampling(): boolean {
    return this.histogram !== undefined;
  }

  /** A scrape: the histogram (undefined when it was off until now; it samples from now on). */
  private read(): IntervalHistogram | undefined {
    this.lastRead = Date.now();
    const h = this.histogram;
    if (h === undefined) {
      this.histogram = monitorEventLoopDelay({ resolution: LOOP_LAG_RESOLUTION_MS });
      this.histogram.enable();
      this.armIdle(this.idleMs);
    }
    return h;
  }

  private armIdle(ms: number): void {
    this.idleTimer = setTimeout(() => {
      const quiet = Date.now() - this.lastRead;
      if (quiet < this.idleMs) return this.armIdle(this.idleMs - quiet);
      this.stop();
    }, ms);
    this.idleTimer.unref();
  }

  /** Stops sampling (until the next scrape). */
  stop(): void {
    if (this.idleTimer) clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    this.histogram?.disable();
    this.histogram = undefined;
  }
}

/**
 * prom-client's default metrics into `registry` with `prefix`, the event-loop delay as
 * LoopLag (above) instead of prom-client's always-on sampler. Returns the LoopLag; undefined
 * when prom-client's per-metric modules cannot be loaded (then its collectDefaultMetrics()).
 */
export function defaultMetrics(registry: Registry, prefix: string, idleMs?: number): LoopLag | undefined {
  let modules: DefaultMetricModule[];
  try {
    modules = collectDefaultMetrics.metricsList.filter((name) => name !== 'eventLoopLag')
      .map((name) => require(`prom-client/lib/metrics/${name}`) as DefaultMetricModule);
  } catch {
    // a prom-client whose files moved: its own collector, always-on sampler included
    collectDefaultMetrics({ register: registry, prefix });
    return undefined;
  }
  for (const register of modules) register(registry, { prefix });
  return new LoopLag(registry, prefix, idleMs);
}
