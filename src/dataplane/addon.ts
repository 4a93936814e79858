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

/** Options of openEngine. */
export interface EnginePortOptions {
  /** Forwarding threads = TUN queues (IFF_MULTI_QUEUE when > 1) = UDP sockets (SO_REUSEPORT when > 1). 1..64. */
  readonly queues: number;
  /** IFF_VNET_HDR + TUNSETOFFLOAD(CSUM|TSO4): super-packets cut and coalesced in C (default false; a kernel refusing it: opened without) */
  readonly tunOffload?: boolean;
}

/** Offloads in force (asked for and taken by the kernel), and asked for. */
export interface EngineOffloads {
  readonly tun: boolean;
  readonly udpGso: boolean;
  readonly udpGro: boolean;
  readonly tunAsked: boolean;
  readonly udpGsoAsked: boolean;
  readonly udpGroAsked: boolean;
}

/** What EnginePort.start needs; every number a uint32 in host order unless said otherwise. */
export interface EngineStartOptions {
  /** UDP port P, 1..65535: sockets bound to bindAddress:P, peers must send from P, are sent to P. */
  readonly port: number;
  /** source address of the ICMP errors written into the TUN (the lease's network address) */
  readonly tunAddress: number;
  /** bytes, 68..65535: inbound packets longer than this are dropped (drop_too_big) */
  readonly tunMtu: number;
  /** this node's subnet: inbound destinations must be inside it (host bits zero) */
  readonly subnet: number;
  /** 0..32 */
  readonly subnetLen: number;
  /** UDP_SEGMENT on send, probed on each socket (default false) */
  readonly udpGso?: boolean;
  /** UDP_GRO on receive, probed on each socket (default false) */
  readonly udpGro?: boolean;
  /** local address the sockets bind to (uint32; undefined or 0 = 0.0.0.0): the source of every datagram sent */
  readonly bindAddress?: number;
  /** ICMP errors of all queues: tokens per second, 0 = no limit (default 1000, like net.ipv4.icmp_msgs_per_sec) */
  readonly icmpRatelimitRate?: number;
  /** ICMP errors of all queues: bucket size, >= 1 (default 50, like net.ipv4.icmp_msgs_burst) */
  readonly icmpRatelimitBurst?: number;
  /**
   * IPv6 in the overlay. Every IPv6 address here is a Uint32Array of 4 words: the address as
   * four big-endian 32-bit chunks (word i = bytes 4i..4i+3 of the address; see ip6ToWords).
   * subnet6 present = inner IPv6 forwarded (then subnet6Len and tunAddress6 are required);
   * absent = IPv4 only, byte for byte as without these options (inner IPv6 is drop_malformed).
   */
  readonly subnet6?: Uint32Array;
  /** 0..128; host bits of subnet6 must be zero (RangeError) */
  readonly subnet6Len?: number;
  /** source of the ICMPv6 errors (the TUN's IPv6 address) */
  readonly tunAddress6?: Uint32Array;
  /** present: AF_INET6 sockets (IPV6_V6ONLY, one per queue) bound to [bindAddress6]:port (all zero = ::), the IPv6 underlay */
  readonly bindAddress6?: Uint32Array;
}

/**
 * The native engine (native/src/engine.c): the TUN device with one queue per forwarding
 * thread, and, after start(), the UDP sockets and the threads. Packets never cross into
 * JavaScript. All methods run on the JS main thread; after close() they throw an Error with
 * code 'ERR_ENGINE_CLOSED' (start() twice: 'ERR_ENGINE_STARTED').
 */
export interface EnginePort {
  /** The device name the kernel gave. */
  readonly name: string;
  readonly queues: number;
  /**
   * Live counters, queues x Addon.engineCounterStride words: queue q's counter i at
   * q * engineCounterStride + i, i indexing Addon.engineCounterNames. Written by the
   * threads with relaxed atomics, read with no call; monotonic; still readable (frozen)
   * after close() for as long as JS holds the array.
   */
  readonly counters: BigUint64Array;
  /** Opens the sockets and starts the threads. Errors: Error with code/syscall (e.g. EADDRINUSE from 'bind'). */
  start(options: EngineStartOptions): void;
  /**
   * Replaces the whole route set: [net, len, peer] per route (uint32 host order, host bits
   * of net zero, len 0..32; the same subnet twice: the last wins). The new table reaches
   * every thread at its next batch without locking them (route.c). Allowed before start().
   * RangeError for an invalid prefix.
   */
  setRoutes(routes: Uint32Array): void;
  /**
   * Replaces the whole IPv6 route set, ROUTE6_WORDS (11) words per route:
   *   [0..3] net (4 big-endian words, as EngineStartOptions.subnet6), [4] len 0..128,
   *   [5] peer: the peer's IPv4 underlay address (uint32 host order),
   *   [6] hasPeer6: 1 = send over the IPv6 underlay to peer6 (when this engine has IPv6
   *       sockets), 0 = over IPv4 to peer, [7..10] peer6 (4 big-endian words; ignored when 0).
   * Published like setRoutes (independently of it). Allowed before start(). RangeError for
   * an invalid prefix or field.
   */
  setRoutes6(routes: Uint32Array): void;
  /** The offloads in force: the TUN's from openEngine, the UDP ones after start() (false before). */
  offloads(): EngineOffloads;
  /** Stops and joins the threads (within 1 s), closes the sockets and the TUN, frees the tables. Idempotent. */
  close(): void;
}

/** Result of Addon.routeBench. */
export interface RouteBenchResult {
  /** rounds x addrs.length */
  readonly lookups: number;
  /** lookups that found a route */
  readonly found: number;
  /** wall time of the lookups alone, nanoseconds (CLOCK_MONOTONIC) */
  readonly ns: number;
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
  /**
   * Opens the TUN device `name` for the native engine with options.queues queues, and its
   * (empty) route table. `onFatal` is called on the JS main thread, at most once per
   * queue, when a forwarding thread stops on an error it cannot recover from (an Error
   * with code and syscall, e.g. 'EBADFD' from 'read(tun)' when the device was deleted).
   * Errors as openTun's.
   */
  openEngine(name: string, options: EnginePortOptions, onFatal: (err: Error) => void): EnginePort;
  /**
   * Names of one queue's block of EnginePort.counters, in index order: first exactly
   * ENGINE_COUNTERS of engine.ts, then the native engine's own (polls, bursts, ...).
   */
  readonly engineCounterNames: readonly string[];
  /** Words per queue in EnginePort.counters (>= engineCounterNames.length). */
  readonly engineCounterStride: number;
  /**
   * Benchmark hook (bench/): builds a C route table from [net, len, peer] triples and times
   * rounds x addrs.length lookups inside C, through the per-thread cache (cached) or the
   * bare longest-prefix match. rounds 1..1e6. Blocks the JS thread while it runs.
   */
  routeBench(routes: Uint32Array, addrs: Uint32Array, rounds: number, cached: boolean): RouteBenchResult;
}

/** Words per route in EnginePort.setRoutes6. */
export const ROUTE6_WORDS = 11;

/** An IPv6 address (bigint) as the 4 big-endian 32-bit words the addon takes. */
export function ip6ToWords(a: bigint): Uint32Array {
  const w = new Uint32Array(4);
  for (let i = 0; i < 4; i++) w[i] = Number((a >> BigInt(96 - 32 * i)) & 0xffffffffn);
  return w;
}

let cached: Addon | undefined;

/**
 * Loads the addon once. Throws with a hint to rebuild when it is missing.
 * OVERLAYD_ADDON (a path) loads another build instead, e.g. the ASan build of
 * `make -C native/test addon-asan` (see native/test/e2e-asan.sh).
 */
export function loadAddon(): Addon {
  if (cached) return cached;
  const file = process.env['OVERLAYD_ADDON'] || path.resolve(__dirname, '..', '..', '..', 'build', 'Release', 'overlayd.node');
  try {
    // eslint-disable-next-line @typescript-eslint/no-require-imports
    cached = require(file) as Addon;
  } catch (err) {
    throw new Error(`cannot load the native addon ${file} (run "npm ci" or "npm run build:native"): ${String(err)}`, { cause: err });
  }
  return cached;
}
