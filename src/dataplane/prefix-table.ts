/**
 * The engines' peer route tables: longest-prefix match over peer subnets, with an
 * lru-cache front keyed by destination address. One implementation for both families,
 * generic over the address type A (number: IPv4 uint32; bigint: IPv6 128-bit) through a
 * small per-family AddressOps object. RouteTable (./route-table) and RouteTable6
 * (./route-table6) are its IPv4 and IPv6 instances.
 *
 * Structure: one Map (network address -> route) per prefix length present, and the present
 * lengths kept in a small array sorted longest first. A lookup probes `dst & mask(len)` in
 * each map from the longest length down and stops at the first hit, which is by
 * construction the longest match. Why this and not a binary trie:
 * - cost is one hashed probe per *distinct* prefix length, and an overlay has one or two
 *   (every lease has the network's SubnetLen; maybe a /0 or /16 default), so a cache miss
 *   costs 1-2 Map probes, against up to 32 (128) dependent node hops in a trie;
 * - upsert and remove are O(1) (plus an O(maxLen) re-sort when a length appears or
 *   disappears), and there are no nodes to prune on removal;
 * - it is obviously correct, and it is what the tests' brute-force references check.
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
 * Peers: the table counts the routes naming each peer's IPv4 underlay address (publicIp)
 * so that inbound datagrams can be checked against known peers in O(1); a family may count
 * further underlay addresses through the refPeers/clearPeers hooks.
 *
 * Ownership: upsert stores a frozen copy of the route (made by the subclass's freeze);
 * lookup/get/routes return those frozen objects, so callers can neither mutate the table
 * nor be surprised by it. Single-threaded: called from the JS main thread only.
 */
import { LRUCache } from 'lru-cache';

export const DEFAULT_ROUTE_CACHE_SIZE = 4096;

export interface RouteTableOptions {
  /**
   * Entries of the positive destination cache, and separately of the negative one.
   * Default DEFAULT_ROUTE_CACHE_SIZE; 0 disables caching.
   */
  cacheSize?: number;
}

/** What the table needs to know about one address family. Pure functions, no state. */
export interface AddressOps<A> {
  /** the longest prefix length: 32 or 128 */
  readonly maxLen: number;
  /** put before "route subnet" in error messages: '' or 'IPv6 ' */
  readonly label: string;
  /** the netmask of prefix length `len` (0..maxLen) */
  mask(len: number): A;
  /** the map key of `dst` under `mask`: dst & mask, in canonical form (uint32 for IPv4) */
  key(dst: A, mask: A): A;
  /** the canonical form of a lookup destination (IPv4: a signed int32 read as its uint32) */
  canonical(dst: A): A;
  /** true when `a` is a valid address of the family (runtime check of untrusted input) */
  isAddr(a: A): boolean;
  /** total order on addresses, as for Array.prototype.sort */
  compare(a: A, b: A): number;
  /** the prefix in CIDR text, for error messages */
  formatPrefix(p: { readonly addr: A; readonly len: number }): string;
}

/** The part of a route the table reads: the subnet and the peer's IPv4 underlay address. */
export interface PeerRoute<A> {
  readonly subnet: { readonly addr: A; readonly len: number };
  /** the peer node's IPv4 underlay address, uint32 */
  readonly publicIp: number;
}

/** Cache value for "no route": lru-cache values must not be undefined. */
const NO_ROUTE = Object.freeze({ noRoute: true as const });

export function isUint32(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 0xffffffff;
}

/** Counts one more reference to `k` in a reference-count map. */
export function addRef<K>(m: Map<K, number>, k: K): void {
  m.set(k, (m.get(k) ?? 0) + 1);
}

/** Drops one reference to `k`; the entry is deleted at zero. */
export function unref<K>(m: Map<K, number>, k: K): void {
  const n = m.get(k) ?? 0;
  if (n <= 1) m.delete(k);
  else m.set(k, n - 1);
}

export abstract class PrefixTable<A extends number | bigint, R extends PeerRoute<A>> {
  /** prefix length -> (network address -> route); a map is deleted when it empties. */
  private readonly byLen = new Map<number, Map<A, R>>();
  /** the maps of byLen, longest prefix length first */
  private levels: Map<A, R>[] = [];
  /** the netmask of each entry of `levels` */
  private masks: A[] = [];
  /** peer publicIp -> number of routes pointing at it */
  private readonly peers = new Map<number, number>();
  private count = 0;
  private readonly hits: LRUCache<A, R> | undefined;
  private readonly misses: LRUCache<A, typeof NO_ROUTE> | undefined;

  protected constructor(private readonly ops: AddressOps<A>, opts?: RouteTableOptions) {
    const size = opts?.cacheSize ?? DEFAULT_ROUTE_CACHE_SIZE;
    if (!Number.isInteger(size) || size < 0) throw new RangeError(`cacheSize must be a non-negative integer, got ${size}`);
    if (size > 0) {
      this.hits = new LRUCache<A, R>({ max: size });
      this.misses = new LRUCache<A, typeof NO_ROUTE>({ max: size });
    }
  }

  /** A frozen copy of a validated route (with a frozen copy of its subnet). */
  protected abstract freeze(route: R): R;

  /**
   * Throws RangeError when the route's family-specific peer fields are invalid. Called by
   * upsert after subnet and publicIp are checked.
   */
  protected checkPeers(_route: R): void {}

  /** True when `a` and `b` name the same peer addresses. */
  protected samePeers(a: R, b: R): boolean {
    return a.publicIp === b.publicIp;
  }

  /** Adds (delta 1) or drops (delta -1) the references of `r` to its peer addresses. */
  protected refPeers(r: R, delta: 1 | -1): void {
    if (delta === 1) addRef(this.peers, r.publicIp);
    else unref(this.peers, r.publicIp);
  }

  /** Forgets every peer reference. */
  protected clearPeers(): void {
    this.peers.clear();
  }

  /**
   * Adds the route, or changes the peer of the existing route for exactly that subnet.
   * Throws RangeError when the subnet is not a valid prefix (len 0..maxLen, host bits zero)
   * or publicIp is not a uint32 (or a family-specific peer field is invalid).
   * Re-upserting an identical route changes nothing.
   */
  upsert(route: R): void {
    const { subnet, publicIp } = route;
    if (!this.isValidPrefix(subnet)) throw new RangeError(`invalid ${this.ops.label}route subnet ${String(subnet.addr)}/${subnet.len}`);
    if (!isUint32(publicIp)) throw new RangeError(`invalid peer address ${publicIp} for ${this.ops.formatPrefix(subnet)}`);
    this.checkPeers(route);
    let m = this.byLen.get(subnet.len);
    const old = m?.get(subnet.addr);
    if (old !== undefined && this.samePeers(old, route)) return;
    if (m === undefined) {
      m = new Map();
      this.byLen.set(subnet.len, m);
      this.reindexLengths();
    }
    const stored = this.freeze(route);
    m.set(subnet.addr, stored);
    if (old !== undefined) this.refPeers(old, -1);
    else this.count++;
    this.refPeers(stored, 1);
    this.invalidate();
  }

  /** Removes the route for exactly `subnet`; true if it existed. */
  remove(subnet: R['subnet']): boolean {
    const m = this.byLen.get(subnet.len);
    const old = m?.get(subnet.addr);
    if (m === undefined || old === undefined) return false;
    m.delete(subnet.addr);
    if (m.size === 0) {
      this.byLen.delete(subnet.len);
      this.reindexLengths();
    }
    this.count--;
    this.refPeers(old, -1);
    this.invalidate();
    return true;
  }

  /**
   * Longest-prefix match for `dst` (IPv4: uint32, a signed int32 is accepted and read as its
   * uint32 value; IPv6: 128-bit bigint). Served from the cache when possible; never
   * allocates on a cache hit.
   */
  lookup(dst: A): R | undefined {
    dst = this.ops.canonical(dst);
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
  routes(): R[] {
    const out: R[] = [];
    for (const m of this.byLen.values()) for (const r of m.values()) out.push(r);
    const cmp = this.ops.compare;
    out.sort((a, b) => cmp(a.subnet.addr, b.subnet.addr) || a.subnet.len - b.subnet.len);
    return out;
  }

  /** The route for exactly `subnet`, if any. */
  get(subnet: R['subnet']): R | undefined {
    return this.byLen.get(subnet.len)?.get(subnet.addr);
  }

  /** Removes every route. */
  clear(): void {
    if (this.count === 0) return;
    this.byLen.clear();
    this.clearPeers();
    this.levels = [];
    this.masks = [];
    this.count = 0;
    this.invalidate();
  }

  private isValidPrefix(p: R['subnet']): boolean {
    const ops = this.ops;
    return Number.isInteger(p.len) && p.len >= 0 && p.len <= ops.maxLen && ops.isAddr(p.addr)
      && ops.key(p.addr, ops.mask(p.len)) === p.addr;
  }

  /** The uncached longest-prefix match. */
  private match(dst: A): R | undefined {
    const levels = this.levels;
    const masks = this.masks;
    const key = this.ops.key;
    for (let i = 0; i < levels.length; i++) {
      const r = levels[i]!.get(key(dst, masks[i]!));
      if (r !== undefined) return r;
    }
    return undefined;
  }

  private reindexLengths(): void {
    const lens = [...this.byLen.keys()].sort((a, b) => b - a);
    this.levels = lens.map((len) => this.byLen.get(len)!);
    this.masks = lens.map((len) => this.ops.mask(len));
  }

  private invalidate(): void {
    if (this.hits !== undefined && this.hits.size > 0) this.hits.clear();
    if (this.misses !== undefined && this.misses.size > 0) this.misses.clear();
  }
}
