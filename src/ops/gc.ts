/**
 * One full garbage collection on demand, for the end of a burst that left a lot of garbage
 * (the initial sync of 10,000 leases: the etcd answers, the parsed leases, the diff). V8
 * would collect it too, but only once its memory reducer sees the process idle (tens of
 * seconds); until then the garbage is resident. Main thread; pauses it for the collection
 * (milliseconds at that size).
 *
 * The collector is V8's `gc`, present only when node runs with --expose-gc (bin/overlayd's
 * node flags). Without it (e.g. `node dist/src/main.js`) nothing happens: the collection is
 * an optimisation of the resident size, never needed for correctness. V8 flags are not
 * changed at run time (v8.setFlagsFromString after start-up is undefined behaviour).
 */

/** Runs a full GC now; false when node was started without --expose-gc (nothing happens then). */
export function collectGarbage(): boolean {
  const gc: unknown = (globalThis as { gc?: unknown }).gc;
  if (typeof gc !== 'function') return false;
  (gc as () => void)();
  return true;
}
