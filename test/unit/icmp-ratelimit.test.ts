import t from 'tap';
import { ICMP_RATELIMIT_BURST, ICMP_RATELIMIT_RATE, IcmpRateLimiter } from '../../src/net/icmp';
import { parseDaemonArgs, type Config } from '../../src/config';

/** The ICMP error token bucket of the js engine (twin of native/src/ratelimit.c), on an injected clock. */
t.test('defaults are Linux icmp_msgs_per_sec / icmp_msgs_burst', async (t) => {
  t.equal(ICMP_RATELIMIT_RATE, 1000);
  t.equal(ICMP_RATELIMIT_BURST, 50);
});

t.test('burst, then one token per 1/rate', async (t) => {
  let now = 5000;
  const l = new IcmpRateLimiter(1000, 50, () => now);
  let n = 0;
  for (let i = 0; i < 1000; i++) if (l.take()) n++;
  t.equal(n, 50, '1000 at one instant: the burst of 50');
  now += 0.999;
  t.notOk(l.take(), 'not before 1 ms');
  now += 0.001;
  t.ok(l.take(), 'one after 1 ms');
  t.notOk(l.take(), 'and only one');
  now += 10_000;
  n = 0;
  for (let i = 0; i < 1000; i++) if (l.take()) n++;
  t.equal(n, 50, 'after 10 s idle: full again, not more than the burst');
});

t.test('a flood never gets more than burst + rate * elapsed', async (t) => {
  let now = 0;
  const l = new IcmpRateLimiter(100, 5, () => now);
  let n = 0;
  for (let i = 0; i < 20000; i++) {
    now = i * 0.1; // one take every 100 us for 2 s
    if (l.take()) n++;
  }
  t.ok(n <= 5 + 100 * 2 && n >= 5 + 199, `20000 takes over 2 s: ${n} pass (at most 205)`);
  const odd = new IcmpRateLimiter(3, 1, () => now);
  n = 0;
  for (let i = 0; i < 1000; i++) {
    now = 100_000 + i * 10; // 10 s
    if (odd.take()) n++;
  }
  t.ok(n <= 1 + 30, `3/s over 10 s: ${n} pass (at most 31)`);
});

t.test('rate 0: no limit; bad values are refused', async (t) => {
  const l = new IcmpRateLimiter(0, 1, () => 0);
  let n = 0;
  for (let i = 0; i < 1000; i++) if (l.take()) n++;
  t.equal(n, 1000);
  t.throws(() => new IcmpRateLimiter(10, 0), /burst 0/);
  t.throws(() => new IcmpRateLimiter(-1, 5), /rate -1/);
  t.throws(() => new IcmpRateLimiter(1.5, 5), /rate 1.5/);
});

function daemonConfig(argv: string[], env: NodeJS.ProcessEnv = {}): Config {
  const r = parseDaemonArgs(argv, env);
  if (r.kind !== 'daemon') throw new Error('not a daemon command');
  return r.config;
}

t.test('--icmp-ratelimit-rate / --icmp-ratelimit-burst and their environment variables', async (t) => {
  t.same(daemonConfig([]).icmpRateLimit, { rate: 1000, burst: 50 }, 'defaults');
  t.same(daemonConfig(['--icmp-ratelimit-rate', '10', '--icmp-ratelimit-burst=3']).icmpRateLimit, { rate: 10, burst: 3 });
  t.same(daemonConfig([], { OVERLAYD_ICMP_RATELIMIT_RATE: '0', OVERLAYD_ICMP_RATELIMIT_BURST: '7' }).icmpRateLimit, { rate: 0, burst: 7 });
  t.same(daemonConfig(['--icmp-ratelimit-rate', '20'], { OVERLAYD_ICMP_RATELIMIT_RATE: '5' }).icmpRateLimit.rate, 20, 'the flag wins');
  t.throws(() => daemonConfig(['--icmp-ratelimit-burst', '0']), /--icmp-ratelimit-burst: "0" is not a whole number in 1\.\.4294967295/);
  t.throws(() => daemonConfig(['--icmp-ratelimit-rate', 'fast']), /--icmp-ratelimit-rate: "fast" is not a whole number/);
  t.throws(() => daemonConfig([], { OVERLAYD_ICMP_RATELIMIT_RATE: '-1' }), /--icmp-ratelimit-rate/);
});
