/**
 * One full garbage collection on demand, for the end of a burst that left a lot of garbage
 * (the initial sync of 10,000 leases: the etcd answers, the parsed leases, the diff). V8
 * would collect it too, but only once its memory reducer sees the process idle (tens of
 * seconds); until then the garbage is resident. Main thread; pauses it for the collection
 * (milliseconds at that size).
 */
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';

let gcFn: (() => void) | undefined;

/** Runs a full GC now; false when this V8 does not allow it (nothing happens then). */
export function collectGarbage(): boolean {
  if (!gcFn) {
    try {
      // --expose-gc for contexts created from now on: fetch `gc` from a fresh one
      setFlagsFromString('--expose-gc');
      const fn: unknown = runInNewContext('gc');
      if (typeof fn === 'function') gcFn = fn as () => void;
    } catch {
      return false;
    }
  }
  if (!gcFn) return false;
  gcFn();
  return true;
}
