/**
 * The js engine's peer route table: longest-prefix match over peer subnets, with an
 * lru-cache front keyed by destination address.
 *
 * Structure: one Map (network address uint32 -> Route) per prefix length present, and the
 * present lengths kept in a small array sorted longest first. A lookup probes
 * `dst & mask(len)` in each map from the longest length down and stops at the first hit,
 * which is by construction the longest match. Why this and not a binary trie:
 * - cost is one hashed probe per *distinct* prefix length, and an overlay has one or two
 *   (every lease has the network's SubnetLen; maybe a /0 or /16 default), so a cache miss
 *   costs 1-2 Map probes, against up to 32 dependent node hops in a trie;
 * - upsert and remove are O(1) (plus an O(33) re-sort when a length appears or
 *   disappears), and there are no nodes to prune on removal;
 * - it is obviously correct, and it is what the test's brute-force reference checks.
 * flannel's udp backend scans its routes linearly and takes the first match; this does not.
 *
 * Cache: results are cached per destination, including "no route" (a sentinel, because
 * lru-cache cannot store undefined), so a stream of packets to an unknown address stays
 * cheap. Negative results live in their own LRU, the same size as the positive one, so a
 * flood to many unknown addresses cannot evict the working set of routed destinations.
 * Both caches are cleared on every change of the table (add, remove, change of peer): a
 * negative entry may be covered by a newly added route and a positive entry may be the
 * one removed or re-pointed, and narrower invalidation is not worth its bugs at the rate
 * routes change (lease events).
 *
 * Ownership: upsert stores a frozen copy of the route; lookup/get/routes return those
 * frozen objects, so callers can neither mutate the table nor be surprised by it.
 * Single-threaded: called from the JS main thread only.
 */
import { LRUCache } from 'lru-cache';
import { formatPrefix, maskOf, type Prefix } from '../net/addr';
import type { Route } from './types';

export const DEFAULT_ROUTE_CACHE_SIZE = 4096;

/** Cache value for "no route": lru-cache values must not be undefined. */
const NO_ROUTE = Object.freeze({ noRoute: true as const });

function isUint32(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 0xffffffff;
}

function isValidPrefix(p: Prefix): boolean {
  return Number.isInteger(p.len) && p.len >= 0 && p.len <= 32 && isUint32(p.addr)
    && ((p.addr & maskOf(p.len)) >>> 0) === p.addr;
}

export interface RouteTableOptions {
  /**
   * Entries of the positive destination cache, and separately of the negative one.
   * Default DEFAULT_ROUTE_CACHE_SIZE; 0 disables caching.
   */
  cacheSize?: number;
}

export class RouteTable {
  /** prefix length -> (network address -> route); a map is deleted when it empties. */
  private readonly byLen = new Map<number, Map<number, Route>>();
  /** the maps of byLen, longest prefix length first */
  private levels: Map<number, Route>[] = [];
  /** the netmask of each entry of `levels` */
  private masks: number[] = [];
  /** peer publicIp -> number of routes pointing at it */
  private readonly peers = new Map<number, number>();
  private count = 0;
  private readonly hits: LRUCache<number, Route> | undefined;
  private readonly misses: LRUCache<number, typeof NO_ROUTE> | undefined;

  constructor(opts?: RouteTableOptions) {
    const size = opts?.cacheSize ?? DEFAULT_ROUTE_CACHE_SIZE;
    if (!Number.isInteger(size) || size < 0) throw new RangeError(`cacheSize must be a non-negative integer, got ${size}`);
    if (size > 0) {
      this.hits = new LRUCache<number, Route>({ max: size });
      this.misses = new LRUCache<number, typeof NO_ROUTE>({ max: size });
    }
  }

  /**
   * Adds the route, or changes the peer of the existing route for exactly that subnet.
   * Throws RangeError when the subnet is not a valid prefix (len 0..32, host bits zero) or
   * publicIp is not a uint32. Re-upserting an identical route changes nothing.
   */
  upsert(route: Route): void {
    const { subnet, publicIp } = route;
    if (!isValidPrefix(subnet)) throw new RangeError(`invalid route subnet ${subnet.addr}/${subnet.len}`);
    if (!isUint32(publicIp)) throw new RangeError(`invalid peer address ${publicIp} for ${formatPrefix(subnet)}`);
    let m = this.byLen.get(subnet.len);
    const old = m?.get(subnet.addr);
    if (old !== undefined && old.publicIp === publicIp) return;
    if (m === undefined) {
      m = new Map();
      this.byLen.set(subnet.len, m);
      this.reindexLengths();
    }
    m.set(subnet.addr, Object.freeze({ subnet: Object.freeze({ addr: subnet.addr, len: subnet.len }), publicIp }));
    if (old !== undefined) this.unref(old.publicIp);
    else this.count++;
    this.peers.set(publicIp, (this.peers.get(publicIp) ?? 0) + 1);
    this.invalidate();
  }

  /** Removes the route for exactly `subnet`; true if it existed. */
  remove(subnet: Prefix): boolean {
    const m = this.byLen.get(subnet.len);
    const old = m?.get(subnet.addr);
    if (m === undefined || old === undefined) return false;
    m.delete(subnet.addr);
    if (m.size === 0) {
      this.byLen.delete(subnet.len);
      this.reindexLengths();
    }
    this.count--;
    this.unref(old.publicIp);
    this.invalidate();
    return true;
  }

  /**
   * Longest-prefix match for `dst` (uint32; a signed int32 is accepted and read as its
   * uint32 value). Served from the cache when possible; never allocates on a cache hit.
   */
  lookup(dst: number): Route | undefined {
    dst >>>= 0;
    const hits = this.hits;
    if (hits !== undefined) {
      const r = hits.get(dst);
      if (r !== undefined) return r;
      if (this.misses!.has(dst)) return undefined;
    }
    const r = this.match(dst);
    if (hits !== undefined) {
      if (r !== undefined) hits.set(dst, r);
      else this.misses!.set(dst, NO_ROUTE);
    }
    return r;
  }

  /** True when some route's publicIp equals `publicIp` (uint32). O(1). */
  isKnownPeer(publicIp: number): boolean {
    return this.peers.has(publicIp >>> 0);
  }

  /** Number of routes. */
  get size(): number {
    return this.count;
  }

  /** Number of distinct peers (publicIps) the routes point at. */
  get peerCount(): number {
    return this.peers.size;
  }

  /** Entries currently in the destination caches (diagnostics and tests; allocates). */
  cacheEntries(): { positive: number; negative: number } {
    return { positive: this.hits?.size ?? 0, negative: this.misses?.size ?? 0 };
  }

  /** Snapshot of all routes, sorted by subnet address, then by prefix length (shorter first). */
  routes(): Route[] {
    const out: Route[] = [];
    for (const m of this.byLen.values()) for (const r of m.values()) out.push(r);
    out.sort((a, b) => a.subnet.addr - b.subnet.addr || a.subnet.len - b.subnet.len);
    return out;
  }

  /** The route for exactly `subnet`, if any. */
  get(subnet: Prefix): Route | undefined {
    return this.byLen.get(subnet.len)?.get(subnet.addr);
  }

  /** Removes every route. */
  clear(): void {
    if (this.count === 0) return;
    this.byLen.clear();
    this.peers.clear();
    this.levels = [];
    this.masks = [];
    this.count = 0;
    this.invalidate();
  }

  /** The uncached longest-prefix match. */
  private match(dst: number): Route | undefined {
    const levels = this.levels;
    const masks = this.masks;
    for (let i = 0; i < levels.length; i++) {
      const r = levels[i]!.get((dst & masks[i]!) >>> 0);
      if (r !== undefined) return r;
    }
    return undefined;
  }

  private reindexLengths(): void {
    const lens = [...this.byLen.keys()].sort((a, b) => b - a);
    this.levels = lens.map((len) => this.byLen.get(len)!);
    this.masks = lens.map((len) => maskOf(len));
  }

  private unref(publicIp: number): void {
    const n = this.peers.get(publicIp)!;
    if (n <= 1) this.peers.delete(publicIp);
    else this.peers.set(publicIp, n - 1);
  }

  private invalidate(): void {
    if (this.hits !== undefined && this.hits.size > 0) this.hits.clear();
    if (this.misses !== undefined && this.misses.size > 0) this.misses.clear();
  }
}
