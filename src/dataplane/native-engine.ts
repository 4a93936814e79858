/**
 * The native engine: the forwarding loop runs in C threads of the addon (native/src/engine.c),
 * one per TUN queue, and packets never cross into JavaScript. Per packet it does exactly what
 * js-engine.ts does (the same checks in the same order, the same counters, the same ICMP
 * errors); test/e2e/forwarding.test.ts runs the same assertions against both.
 *
 * What crosses the boundary:
 * - routes, JS -> C: this class keeps the route set in a JS mirror (a RouteTable: it
 *   validates, answers routes(), and is the single source of truth) and publishes the whole
 *   set to C with one setRoutes() per burst of changes — coalesced in a microtask, so the
 *   thousands of upserts of an initial sync cost one table build, and the new table is in
 *   force before the event loop runs anything else. C swaps it in without locking the
 *   threads (route.c).
 * - counters, C -> JS: summed over the queues from the addon's shared BigUint64Array (no
 *   call into C per read).
 * - fatal errors, C -> JS: through a bounded, unref'd thread-safe function, at most once
 *   per thread.
 * Lifecycle on the JS main thread: open() creates the TUN queues (so the daemon can
 * configure the link), start() opens the UDP sockets and starts the threads, close() joins
 * them (within 1 s) and closes everything.
 */
import { TunError } from '../errors';
import type { Prefix } from '../net/addr';
import { loadAddon, ip6ToWords, ROUTE6_WORDS, type EnginePort } from './addon';
import { ENGINE_COUNTERS, zeroCounters, sumCounters, type Engine, type EngineCounters, type EngineOptions } from './engine';
import { NO_OFFLOADS, type OffloadState } from './engine';
import { RouteTable } from './route-table';
import type { Route, Route6 } from './types';

/** Route triples' second word: the prefix length in the low byte, flags above (binding.c get_routes). */
const ROUTE_FLAGS_SHIFT = 8;
/** OVL_ROUTE_PARTIAL_CSUM (overlayd.h): the peer takes partial checksums. */
const ROUTE_PARTIAL_CSUM = 1;
import { MAX_IP6, maskOf6, prefix6Key, type Prefix6 } from '../net/addr6';

/**
 * The IPv6 route set as EnginePort.setRoutes6 takes it (ROUTE6_WORDS words per route, see
 * addon.ts). Pure; exported for the unit tests.
 */
export function encodeRoutes6(routes: readonly Route6[]): Uint32Array {
  const out = new Uint32Array(routes.length * ROUTE6_WORDS);
  routes.forEach((r, i) => {
    const o = i * ROUTE6_WORDS;
    out.set(ip6ToWords(r.subnet.addr), o);
    out[o + 4] = r.subnet.len;
    out[o + 5] = r.publicIp;
    if (r.publicIpv6 !== undefined) {
      out[o + 6] = 1;
      out.set(ip6ToWords(r.publicIpv6), o + 7);
    }
  });
  return out;
}

/** The checks EnginePort.setRoutes6 would make, up front (RangeError naming the route). */
function checkRoute6(r: Route6): void {
  const { addr, len } = r.subnet;
  if (!Number.isInteger(len) || len < 0 || len > 128 || addr < 0n || addr > MAX_IP6 || (addr & ~maskOf6(len) & MAX_IP6) !== 0n)
    throw new RangeError(`invalid IPv6 route subnet ${String(addr)}/${len}`);
  if (!Number.isInteger(r.publicIp) || r.publicIp < 0 || r.publicIp > 0xffffffff) throw new RangeError(`invalid peer address ${r.publicIp} for ${prefix6Key(r.subnet)}`);
  if (r.publicIpv6 !== undefined && (r.publicIpv6 < 0n || r.publicIpv6 > MAX_IP6)) throw new RangeError(`invalid peer IPv6 address for ${prefix6Key(r.subnet)}`);
}

export class NativeEngine implements Engine {
  readonly kind = 'native' as const;
  /** the route set in force (C gets a copy of it on every change); no lookup cache needed */
  private readonly mirror = new RouteTable({ cacheSize: 0 });
  /** the IPv6 route set in force, by prefix6Key (C gets a copy on every change) */
  private readonly mirror6 = new Map<string, Route6>();
  private port: EnginePort | undefined;
  /** the counters, kept after close() (frozen at their last values) */
  private counterArray: BigUint64Array | undefined;
  /** index in a queue's counter block of each ENGINE_COUNTERS name, and of every native name */
  private commonIndex: number[] = [];
  private allNames: readonly string[] = [];
  private stride = 0;
  private queues = 0;
  private started = false;
  private closed = false;
  private failed = false;
  private publishQueued = false;
  /** a family's mirror changed since its last publication */
  private dirty4 = false;
  private dirty6 = false;
  private fatalHandler: (err: Error) => void = () => undefined;
  private offloadsAtStart: { tun: boolean; udpGso: boolean; udpGro: boolean } | undefined;

  constructor(private readonly opts: EngineOptions) {}

  get tunName(): string {
    return this.port?.name ?? this.opts.tunName;
  }

  async open(): Promise<void> {
    const addon = loadAddon();
    const queues = this.opts.queues ?? 1;
    try {
      this.port = addon.openEngine(this.opts.tunName, { queues, tunOffload: this.opts.offloads?.tun ?? false }, (err) => this.threadFailed(err));
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new TunError(`cannot open TUN device ${this.opts.tunName} (${queues} queue${queues > 1 ? 's' : ''}): ${e.message}${e.code === 'EPERM' ? ' (needs CAP_NET_ADMIN)' : ''}`, { cause: err });
    }
    this.counterArray = this.port.counters;
    this.queues = this.port.queues;
    this.stride = addon.engineCounterStride;
    this.allNames = addon.engineCounterNames;
    this.commonIndex = ENGINE_COUNTERS.map((name) => {
      const i = addon.engineCounterNames.indexOf(name);
      if (i < 0) throw new Error(`the native addon does not count ${name}: rebuild it (npm run build:native)`);
      return i;
    });
    if (this.mirror.size > 0) this.publish();
    if (this.mirror6.size > 0) this.publish6();
  }

  async start(): Promise<void> {
    const port = this.port;
    if (port === undefined || this.closed) throw new Error('NativeEngine.start: not open');
    const { network, lease } = this.opts;
    try {
      port.start({
        port: network.port, tunAddress: this.opts.tunAddress, tunMtu: this.opts.tunMtu, subnet: lease.subnet.addr, subnetLen: lease.subnet.len,
        udpGso: this.opts.offloads?.udpGso ?? false, udpGro: this.opts.offloads?.udpGro ?? false, bindAddress: this.opts.bindAddress,
        icmpRatelimitRate: this.opts.icmpRateLimit?.rate, icmpRatelimitBurst: this.opts.icmpRateLimit?.burst,
        ...(this.opts.ipv6 === undefined ? {} : {
          subnet6: ip6ToWords(this.opts.ipv6.subnet.addr), subnet6Len: this.opts.ipv6.subnet.len, tunAddress6: ip6ToWords(this.opts.ipv6.tunAddress),
          ...(this.opts.ipv6.underlayBind === undefined ? {} : { bindAddress6: ip6ToWords(this.opts.ipv6.underlayBind) }),
        }),
      });
      this.offloadsAtStart = port.offloads();
    } catch (err) {
      throw new Error(`cannot bind UDP port ${network.port}: ${(err as Error).message}`, { cause: err });
    }
    this.started = true;
  }

  // ---- RouteSink ----
  routes6(): Route6[] {
    return [...this.mirror6.values()];
  }

  /** RangeError for an invalid route; Error when the engine was opened without `ipv6`. */
  upsert6(route: Route6): void {
    if (this.opts.ipv6 === undefined) throw new Error('IPv6 route for an engine without ipv6 options');
    checkRoute6(route);
    const copy: Route6 = Object.freeze({ subnet: Object.freeze({ addr: route.subnet.addr, len: route.subnet.len }), publicIp: route.publicIp,
      ...(route.publicIpv6 === undefined ? {} : { publicIpv6: route.publicIpv6 }) });
    this.mirror6.set(prefix6Key(route.subnet), copy);
    this.schedulePublish(6);
  }

  remove6(subnet: Prefix6): void {
    if (this.mirror6.delete(prefix6Key(subnet))) this.schedulePublish(6);
  }

  upsert(route: Route): void {
    this.mirror.upsert(route);
    this.schedulePublish();
  }

  remove(subnet: Prefix): void {
    if (this.mirror.remove(subnet)) this.schedulePublish();
  }

  routes(): Route[] {
    return this.mirror.routes();
  }

  counters(): EngineCounters {
    return sumCounters(this.queueCounters());
  }

  queueCounters(): EngineCounters[] {
    const v = this.counterArray;
    const out: EngineCounters[] = [];
    for (let q = 0; q < Math.max(1, this.queues); q++) {
      const c = zeroCounters();
      if (v !== undefined && q < this.queues) {
        for (let k = 0; k < ENGINE_COUNTERS.length; k++) c[ENGINE_COUNTERS[k]!] = Number(v[q * this.stride + (this.commonIndex[k] as number)] as bigint);
      }
      out.push(c);
    }
    return out;
  }

  /** Every counter of the native engine (ENGINE_COUNTERS and its own: polls, bursts, ...), summed over the queues. */
  nativeCounters(): Record<string, number> {
    const out: Record<string, number> = {};
    const v = this.counterArray;
    this.allNames.forEach((name, i) => {
      let sum = 0n;
      for (let q = 0; q < this.queues && v !== undefined; q++) sum += v[q * this.stride + i] as bigint;
      out[name] = Number(sum);
    });
    return out;
  }

  offloads(): OffloadState {
    const o = this.offloadsAtStart;
    if (o === undefined) return NO_OFFLOADS;
    const n = this.nativeCounters();
    const fallbacks = { udpGso: n['udp_gso_fallback'] ?? 0, tunGro: n['tun_gro_fallback'] ?? 0 };
    const reenables = { udpGso: n['udp_gso_reenable'] ?? 0, tunGro: n['tun_gro_reenable'] ?? 0 };
    const activity = { tunGsoReads: n['tun_gso_reads'] ?? 0, tunUsoReads: n['tun_uso_reads'] ?? 0, tunGroWrites: n['tun_gro_writes'] ?? 0, udpGsoSends: n['udp_gso_sends'] ?? 0, udpGroRecvs: n['udp_gro_recvs'] ?? 0 };
    return {
      tun: o.tun && fallbacks.tunGro === reenables.tunGro, udpGso: o.udpGso && fallbacks.udpGso === reenables.udpGso, udpGro: o.udpGro,
      fallbacks, reenables, activity,
      partialChecksums: { enabled: this.opts.partialChecksums === true, sent: n['csum_partial_sent'] ?? 0, received: n['csum_partial_received'] ?? 0 },
    };
  }

  alive(): boolean {
    return this.started && !this.closed && !this.failed;
  }

  onFatal(handler: (err: Error) => void): void {
    this.fatalHandler = handler;
  }

  async close(): Promise<void> {
    this.closed = true;
    this.port?.close();
    this.port = undefined;
  }

  /** Publishes the changed mirror(s) once the current burst of route changes is over (one microtask later). */
  private schedulePublish(family: 4 | 6 = 4): void {
    if (family === 4) this.dirty4 = true;
    else this.dirty6 = true;
    if (this.publishQueued || this.port === undefined) return;
    this.publishQueued = true;
    queueMicrotask(() => {
      this.publishQueued = false;
      if (this.dirty4) this.publish();
      if (this.dirty6) this.publish6();
    });
  }

  private publish(): void {
    const port = this.port;
    if (port === undefined || this.closed) return;
    this.dirty4 = false;
    const routes = this.mirror.routes();
    const triples = new Uint32Array(routes.length * 3);
    const partial = this.opts.partialChecksums === true;
    routes.forEach((r, i) => {
      triples[3 * i] = r.subnet.addr;
      // the length in the low byte, OVL_ROUTE_* flags above it (binding.c ROUTE_FLAGS_SHIFT)
      triples[3 * i + 1] = r.subnet.len | (partial && r.partialChecksums ? ROUTE_PARTIAL_CSUM << ROUTE_FLAGS_SHIFT : 0);
      triples[3 * i + 2] = r.publicIp;
    });
    try {
      port.setRoutes(triples);
    } catch (err) {
      // only out of memory can get here (the mirror validated every route): the threads
      // would go on with a stale table, so this is fatal
      this.threadFailed(err as Error);
    }
  }

  private publish6(): void {
    const port = this.port;
    if (port === undefined || this.closed || this.opts.ipv6 === undefined) return;
    this.dirty6 = false;
    try {
      port.setRoutes6(encodeRoutes6([...this.mirror6.values()]));
    } catch (err) {
      this.threadFailed(err as Error); // as publish(): only out of memory gets here
    }
  }

  private threadFailed(err: Error): void {
    if (this.closed || this.failed) return;
    this.failed = true;
    this.fatalHandler(new Error(`native engine: ${err.message}`, { cause: err }));
  }
}
