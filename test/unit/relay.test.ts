/**
 * The lab's impairment relay (src/lab/impair.ts, src/lab/relay.ts): seeded decisions are a
 * pure function of (seed, direction, index), and the relay does exactly what they say, on
 * loopback sockets (no root, nothing leaves 127.0.0.1).
 */
import t from 'tap';
import * as dgram from 'node:dgram';
import { NO_IMPAIRMENT, decide, validateRules, type ImpairRules } from '../../src/lab/impair';
import { LinkRelay } from '../../src/lab/relay';

const RULES: ImpairRules = { drop: 0.05, duplicate: 0.05, reorder: 0.05, reorderDepth: 2, reorderHoldMs: 500, delayMs: 0, jitterMs: 0 };

t.test('decisions: same seed, same decisions; another seed or direction, others; rates as asked', async (t) => {
  const run = (seed: number, dir: number) => Array.from({ length: 20_000 }, (_, i) => decide(RULES, seed, dir, i));
  const a = run(7, 0);
  const text = JSON.stringify(a);
  t.ok(JSON.stringify(run(7, 0)) === text, 'reproducible');
  t.ok(JSON.stringify(run(8, 0)) !== text, 'another seed differs');
  t.ok(JSON.stringify(run(7, 1)) !== text, 'the other direction differs');
  // seeded, so these fractions are fixed numbers: the bounds check the mapping, they cannot flake
  const frac = (f: (d: (typeof a)[number]) => boolean) => a.filter(f).length / a.length;
  for (const [name, f] of [['drop', (d: (typeof a)[number]) => d.drop], ['duplicate', (d: (typeof a)[number]) => d.copies === 2], ['reorder', (d: (typeof a)[number]) => d.reorder]] as const) {
    const p = frac(f);
    t.ok(p > 0.04 && p < 0.06, `${name}: ${(p * 100).toFixed(2)}% of 20,000 for 5%`);
  }
  const delays = Array.from({ length: 1000 }, (_, i) => decide({ ...NO_IMPAIRMENT, delayMs: 3, jitterMs: 2 }, 1, 0, i).delayMs);
  t.ok(delays.every((d) => d >= 3 && d < 5), 'delay = fixed + jitter in [0, jitter)');
  t.ok(Math.max(...delays) - Math.min(...delays) > 1.5, 'jitter spreads the delays');
  t.same(Array.from({ length: 1000 }, (_, i) => decide(NO_IMPAIRMENT, 1, 0, i)).filter((d) => d.drop || d.copies !== 1 || d.reorder || d.delayMs !== 0), [], 'no rules: nothing happens');
});

t.test('bad rules are refused, naming the field', async (t) => {
  t.throws(() => validateRules({ ...RULES, drop: 1.5 }), /impairment rule drop: a probability/);
  t.throws(() => validateRules({ ...RULES, duplicate: -0.1 }), /impairment rule duplicate/);
  t.throws(() => validateRules({ ...RULES, jitterMs: Number.NaN }), /impairment rule jitterMs/);
  t.throws(() => validateRules({ ...RULES, reorderDepth: 0 }), /impairment rule reorderDepth/);
  t.equal(validateRules(RULES), RULES);
});

t.test('on loopback the relay drops, duplicates and reorders exactly the datagrams the seed names', async (t) => {
  const SEED = 99;
  const N = 2000;
  const sink = dgram.createSocket('udp4');
  await new Promise<void>((r) => sink.bind(0, '127.0.0.1', () => r()));
  sink.setRecvBufferSize(4 * 1024 * 1024);
  const got: number[] = [];
  sink.on('message', (m) => got.push(m.readUInt32BE(0)));
  const relay = new LinkRelay({ name: 'test', listen: { host: '127.0.0.1', port: 0 }, to: { host: '127.0.0.1', port: sink.address().port } }, RULES, SEED, 0);
  await relay.start();
  const src = dgram.createSocket('udp4');
  t.teardown(() => { relay.close(); sink.close(); src.close(); });
  const relayPort = relay.address().port;
  for (let i = 0; i < N; i++) {
    const b = Buffer.alloc(64);
    b.writeUInt32BE(i, 0);
    await new Promise<void>((r, j) => src.send(b, relayPort, '127.0.0.1', (e) => (e ? j(e) : r())));
    // in order into the relay: one datagram per turn of its event loop
    await new Promise((r) => setImmediate(r));
  }
  const want = Array.from({ length: N }, (_, i) => decide(RULES, SEED, 0, i));
  const expectedCount = want.reduce((n, d) => n + (d.drop ? 0 : d.copies), 0);
  // held datagrams of the last few go out when their hold time ends: wait for them (bounded)
  for (let i = 0; i < 200 && got.length < expectedCount; i++) await new Promise((r) => setTimeout(r, 25));

  t.equal(relay.counts.received, N, 'every datagram reached the relay');
  t.equal(relay.counts.dropped, want.filter((d) => d.drop).length, 'dropped as decided');
  t.equal(relay.counts.duplicated, want.filter((d) => !d.drop && d.copies === 2).length, 'duplicated as decided');
  t.equal(relay.counts.reordered + relay.counts.reorderFlushed, want.filter((d) => !d.drop && d.reorder).length, 'held as decided');
  t.ok(relay.counts.reordered > 0, `reordered ${relay.counts.reordered}`);
  t.equal(got.length, expectedCount, 'the sink got every copy the rules send');
  const seen = new Map<number, number>();
  for (const i of got) seen.set(i, (seen.get(i) ?? 0) + 1);
  const mismatch = want.map((d, i) => [i, d.drop ? 0 : d.copies, seen.get(i) ?? 0]).filter(([, w, s]) => w !== s);
  t.same(mismatch, [], 'each datagram arrived as often as decided (0, 1 or 2 times), payload intact');
  // a held datagram (the last copy of a duplicated one) arrives after the next datagram that is not dropped or held
  const firstPos = new Map<number, number>();
  const lastPos = new Map<number, number>();
  got.forEach((v, pos) => { if (!firstPos.has(v)) firstPos.set(v, pos); lastPos.set(v, pos); });
  const late = want.map((_, i) => i).filter((i) => !want[i]!.drop && want[i]!.reorder && i + 1 < N)
    .filter((i) => { const next = want.findIndex((d, j) => j > i && !d.drop && !d.reorder); return next > 0 && lastPos.get(i)! > firstPos.get(next)!; });
  t.equal(late.length, relay.counts.reordered, 'every datagram counted as reordered was overtaken on the wire');
});
