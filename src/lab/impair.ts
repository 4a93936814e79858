/**
 * Seeded impairment rules for the test lab's relay (src/lab/relay.ts): what happens to the
 * i-th datagram of a direction is a pure function of (seed, direction, i). The same seed and
 * the same datagram sequence give the same decisions, whatever the timing or the number of
 * random draws elsewhere (counter-based hashing, no shared PRNG state).
 */

export interface ImpairRules {
  /** probability that a datagram is dropped, 0..1 */
  readonly drop: number;
  /** probability that a (not dropped) datagram is sent twice, 0..1 */
  readonly duplicate: number;
  /** probability that a datagram is held back until `reorderDepth` later datagrams of its direction went out, 0..1 */
  readonly reorder: number;
  /** how many later datagrams overtake a held one (>= 1) */
  readonly reorderDepth: number;
  /** upper bound on holding a datagram for reordering, ms: the tail of a flow is never stalled */
  readonly reorderHoldMs: number;
  /** fixed delay of every datagram, ms */
  readonly delayMs: number;
  /** plus a uniform random extra delay in [0, jitterMs), ms (jitter above the gap between datagrams reorders too) */
  readonly jitterMs: number;
}

export const NO_IMPAIRMENT: ImpairRules = { drop: 0, duplicate: 0, reorder: 0, reorderDepth: 1, reorderHoldMs: 50, delayMs: 0, jitterMs: 0 };

export interface Decision {
  readonly drop: boolean;
  /** 1 or 2 */
  readonly copies: number;
  readonly reorder: boolean;
  /** total delay, ms (fixed + jitter) */
  readonly delayMs: number;
}

/** Checks the rules; throws an Error naming the bad field. */
export function validateRules(r: ImpairRules): ImpairRules {
  for (const k of ['drop', 'duplicate', 'reorder'] as const) {
    if (!(r[k] >= 0 && r[k] <= 1)) throw new Error(`impairment rule ${k}: a probability in [0, 1] expected, got ${r[k]}`);
  }
  for (const k of ['delayMs', 'jitterMs', 'reorderHoldMs'] as const) {
    if (!(r[k] >= 0 && Number.isFinite(r[k]))) throw new Error(`impairment rule ${k}: milliseconds >= 0 expected, got ${r[k]}`);
  }
  if (!(Number.isInteger(r.reorderDepth) && r.reorderDepth >= 1)) throw new Error(`impairment rule reorderDepth: an integer >= 1 expected, got ${r.reorderDepth}`);
  return r;
}

/** uniform in [0, 1) from (seed, direction, index, draw): a 32-bit avalanche mix (murmur3 finalizer) */
export function uniform(seed: number, direction: number, index: number, draw: number): number {
  let h = (seed ^ Math.imul(direction + 1, 0x9e3779b1)) >>> 0;
  for (const v of [index >>> 0, Math.floor(index / 2 ** 32), draw]) {
    h = Math.imul(h ^ v, 0xcc9e2d51) >>> 0;
    h = ((h << 15) | (h >>> 17)) >>> 0;
    h = (Math.imul(h, 0x1b873593) + 0xe6546b64) >>> 0;
  }
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b) >>> 0;
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35) >>> 0;
  h ^= h >>> 16;
  return (h >>> 0) / 2 ** 32;
}

/** The decision for the index-th datagram (0-based) of a direction. */
export function decide(rules: ImpairRules, seed: number, direction: number, index: number): Decision {
  const u = (draw: number) => uniform(seed, direction, index, draw);
  return {
    drop: u(0) < rules.drop,
    copies: u(1) < rules.duplicate ? 2 : 1,
    reorder: u(2) < rules.reorder,
    delayMs: rules.delayMs + u(3) * rules.jitterMs,
  };
}
