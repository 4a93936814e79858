/**
 * Full garbage collection on demand, for the end of a burst that left a lot of garbage
 * (the initial sync of 10,000 leases: the etcd answers, the parsed leases, the diff). V8
 * would collect it too, but only once its memory reducer sees the process idle (tens of
 * seconds); until then the garbage is resident. Main thread; pauses it for the collection
 * (milliseconds at that size).
 *
 * Two collections, not one: the first frees the objects, but their pages stay resident until
 * the sweeper is done with them, which the second collection completes (it then releases the
 * empty pages). Measured with bench/etcd-rss.ts, 10,000 leases, RSS 3 s after start: one gc()
 * 89.1 MB, two 84.6 MB. (V8's `flavor: 'last-resort'` collection measured worse: 104 MB.)
 *
 * The collector is V8's `gc`, present only when node runs with --expose-gc (bin/overlayd's
 * node flags). Without it (e.g. `node dist/src/main.js`) nothing happens: the collection is
 * an optimisation of the resident size, never needed for correctness. V8 flags are not
 * changed at run time (v8.setFlagsFromString after start-up is undefined behaviour).
 */

/** Runs full GCs now (see above); false when node was started without --expose-gc (nothing happens then). */
export function collectGarbage(): boolean {
  const gc: unknown = (globalThis as { gc?: unknown }).gc;
  if (typeof gc !== 'function') return false;
  (gc as () => void)();
  (gc as () => void)();
  return true;
}
