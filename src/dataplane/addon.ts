/**
 * The typed loader of the native addon (build/Release/overlayd.node, built by node-gyp from
 * binding.gyp and native/). Everything that crosses the native boundary is declared here.
 */
import * as path from 'node:path';

/** Options of a TUN port: the TUN device plus its native I/O thread and two rings. */
export interface TunPortOptions {
  /** Bytes per ring slot: the largest packet carried. 576..65535. */
  readonly slotSize: number;
  /** Slots per ring (each direction), a power of two, 2..65536; slotSize * ringSlots at most 1 GiB (RangeError). */
  readonly ringSlots: number;
  /** Open with IFF_MULTI_QUEUE (later issues); default false. */
  readonly multiQueue?: boolean;
}

/**
 * A TUN device opened by the addon (IFF_TUN | IFF_NO_PI, nonblocking) with a native I/O
 * thread that moves packets TUN -> rx ring and tx ring -> TUN in batches.
 * All methods are called on the JS main thread. After close() every method throws an
 * Error with code 'ERR_TUN_CLOSED'.
 */
export interface TunPort {
  /** The device name the kernel gave (may differ from the requested one only with a '%d' pattern). */
  readonly name: string;
  /**
   * Copies up to `lens.length` packets out of the rx ring (TUN -> JS) into `buf`, packet i at
   * byte offset i * slotSize, its length in lens[i]. Returns the number of packets copied
   * (0 when the ring is empty). `buf.length` must be >= lens.length * slotSize.
   */
  readBatch(buf: Buffer, lens: Uint32Array): number;
  /**
   * Enqueues packets into the tx ring (JS -> TUN) and wakes the I/O thread. Returns how many
   * were accepted, in order; the rest did not fit (ring full) and are the caller's to count.
   * Packets longer than slotSize are refused with a RangeError before anything is queued.
   */
  write(packets: readonly Buffer[]): number;
  /**
   * Counters of the I/O thread, live view of native memory (no call per read), indexed by
   * `Addon.tunCounterNames`. Monotonic, updated by the I/O thread with relaxed atomics.
   * Still readable after close() (frozen at the last values), for as long as JS holds it.
   */
  readonly counters: BigUint64Array;
  /** Stops and joins the I/O thread, closes the fd, frees the rings. Idempotent. */
  close(): void;
}

export interface Addon {
  /**
   * Opens the TUN device `name` (IFNAMSIZ-1 chars at most). `onReadable` is called on the
   * JS main thread when the rx ring went from empty to non-empty; it is not called again
   * until JS has drained the ring with readBatch() returning fewer than asked.
   * Errors: an Error with `code` (errno name, e.g. 'EPERM', 'EBUSY') and `syscall`
   * (e.g. 'open', 'ioctl(TUNSETIFF)').
   */
  openTun(name: string, options: TunPortOptions, onReadable: () => void): TunPort;
  /**
   * Sends one datagram `message` to the unix datagram socket `path` (sd_notify(3):
   * a leading '@' names an abstract socket). Throws an errno Error (code, syscall) on failure.
   */
  sdNotify(path: string, message: string): void;
  /** Names of TunPort.counters, in index order. */
  readonly tunCounterNames: readonly string[];
}

let cached: Addon | undefined;

/** Loads the addon once. Throws with a hint to rebuild when it is missing. */
export function loadAddon(): Addon {
  if (cached) return cached;
  const file = path.resolve(__dirname, '..', '..', '..', 'build', 'Release', 'overlayd.node');
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    cached = require(file) as Addon;
  } catch (err) {
    throw new Error(`cannot load the native addon ${file} (run "npm ci" or "npm run build:native"): ${String(err)}`, { cause: err });
  }
  return cached;
}
