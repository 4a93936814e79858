/**
 * Shared checks of the route-table unit tests (test/unit/route-table*.test.ts): the
 * randomized comparison against a brute-force reference, and the peel-off walk, for either
 * address family. The family-specific parts (address generation, the reference, formatting,
 * peer checks) come from the caller.
 */
import type { Test } from 'tap';
import { DEFAULT_ROUTE_CACHE_SIZE, type PeerRoute, type PrefixTable } from '../../src/dataplane/prefix-table';
import { Rng } from './packets';

/** A parser that throws on bad input (test constants only), naming `what` and the text. */
export function mustParse<T>(parse: (s: string) => T | undefined, what: string): (s: string) => T {
  return (s) => {
    const v = parse(s);
    if (v === undefined) throw new Error(`bad test ${what} ${s}`);
    return v;
  };
}

/** Random addresses, prefixes and routes of one family, drawn from the Rng they were made with. */
export interface RandomFamily<A, R extends PeerRoute<A>> {
  /** an address, clustered so that prefixes overlap a lot */
  addr(): A;
  /** a valid prefix (host bits zero) */
  prefix(): R['subnet'];
  /** a valid route whose publicIp is 1..6 */
  route(): R;
}

export interface RandomTablesSpec<A extends number | bigint, R extends PeerRoute<A>, T extends PrefixTable<A, R>> {
  /** fallback seed of the Rng (OVERLAYD_TEST_SEED-style override is the Rng's) */
  seed: number;
  tables: number;
  probes: number;
  /** steps per table, drawn from minSteps..maxSteps */
  minSteps: number;
  maxSteps: number;
  make(cacheSize: number): T;
  /** the generators for one table (called once per table, after its cache size is drawn) */
  family(rng: Rng): RandomFamily<A, R>;
  /** the longest route containing dst, by a deliberately naive method */
  bruteForce(routes: readonly R[], dst: A): R | undefined;
  /** "subnet via peer" of a lookup result, or "none"; equal strings mean equal routes */
  show(r: R | undefined): string;
  formatPrefix(p: R['subnet']): string;
  formatIp(a: A): string;
  /** undefined when the table's peer queries for publicIp `peer` agree with `routes`, else what differs */
  peerMismatch(rt: T, routes: readonly R[], peer: number): string | undefined;
}

/**
 * Random tables under random upserts and removes (of present and of mostly absent
 * prefixes), every probe looked up twice (filling, then served from the cache) after each
 * step and compared with the brute-force reference; size and peer queries checked too.
 * Stops at the first disagreement with a t.fail naming seed, table and step.
 */
export function checkRandomTables<A extends number | bigint, R extends PeerRoute<A>, T extends PrefixTable<A, R>>(
  t: Test, spec: RandomTablesSpec<A, R, T>,
): void {
  const rng = new Rng(spec.seed);
  let checks = 0;
  let hits = 0;
  for (let table = 0; table < spec.tables; table++) {
    // small caches evict, 0 disables; the default exercises the normal path
    const cacheSize = rng.pick([0, 1, 8, DEFAULT_ROUTE_CACHE_SIZE]);
    const rt = spec.make(cacheSize);
    const ref = new Map<string, R>();
    const fam = spec.family(rng);
    const probes: A[] = [];
    for (let i = 0; i < spec.probes; i++) probes.push(fam.addr());
    const steps = rng.int(spec.minSteps, spec.maxSteps);
    for (let step = 0; step < steps; step++) {
      const op = rng.int(0, 9);
      if (op < 6 || ref.size === 0) {
        const r = fam.route();
        rt.upsert(r);
        ref.set(spec.formatPrefix(r.subnet), r);
      } else if (op < 9) {
        const k = rng.pick([...ref.keys()]);
        if (!rt.remove(ref.get(k)!.subnet)) { t.fail(`remove of existing ${k} returned false`); return; }
        ref.delete(k);
      } else {
        // a random prefix: usually absent, sometimes present
        const p = fam.prefix();
        const existed = ref.delete(spec.formatPrefix(p));
        if (rt.remove(p) !== existed) { t.fail(`remove(${spec.formatPrefix(p)}) != ${existed}`); return; }
      }
      const refRoutes = [...ref.values()];
      for (let pass = 0; pass < 2; pass++) {
        for (const dst of probes) {
          const got = rt.lookup(dst);
          const want = spec.bruteForce(refRoutes, dst);
          checks++;
          if (want !== undefined) hits++;
          if (spec.show(got) !== spec.show(want)) {
            t.fail(`seed ${rng.seed} table ${table} step ${step} cache ${cacheSize}: ${spec.formatIp(dst)} -> ${spec.show(got)}, want ${spec.show(want)}`);
            return;
          }
        }
      }
      if (rt.size !== ref.size) { t.fail(`size ${rt.size} != ${ref.size}`); return; }
    }
    // the peer set equals the reference's
    for (let peer = 1; peer <= 6; peer++) {
      const bad = spec.peerMismatch(rt, [...ref.values()], peer);
      if (bad !== undefined) { t.fail(`table ${table}: ${bad}`); return; }
    }
  }
  t.ok(hits > checks / 4 && hits < checks, `${checks} lookups agree with the reference (${hits} routed)`);
}

/**
 * Removes `walk`'s prefixes in order (each must exist) and checks after each that `dst`
 * now resolves to the expected "subnet via peer" (or "none"): each lookup falls back one
 * level, so no cache entry from before may survive a removal.
 */
export function checkPeelOff<A extends number | bigint, R extends PeerRoute<A>>(
  t: Test, rt: PrefixTable<A, R>, dst: A, parse: (s: string) => R['subnet'], show: (r: R | undefined) => string,
  walk: ReadonlyArray<readonly [remove: string, expect: string]>,
): void {
  for (const [s, want] of walk) {
    t.equal(rt.remove(parse(s)), true, `remove ${s}`);
    t.equal(show(rt.lookup(dst)), want, `after removing ${s}`);
  }
}
