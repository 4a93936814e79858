/**
 * The IPv6 peer route table: longest-prefix match over Route6 entries, with the same
 * structure and cache rules as the IPv4 RouteTable (./route-table): one map per prefix
 * length (network address -> route), probed longest first, behind a positive and a
 * negative LRU destination cache that every change clears.
 *
 * Addresses are 128-bit bigints (../net/addr6). The table also counts the peers' underlay
 * addresses (IPv4 publicIp and IPv6 publicIpv6 separately) so that inbound datagrams can
 * be checked against known peers in O(1).
 *
 * Ownership: upsert stores a frozen copy; lookup/get/routes return those frozen objects.
 * Single-threaded: called from the JS main thread only.
 */
import { LRUCache } from 'lru-cache';
import { MAX_IP6, formatPrefix6, maskOf6, type Prefix6 } from '../net/addr6';
import { DEFAULT_ROUTE_CACHE_SIZE, type RouteTableOptions } from './route-table';
import type { Route6 } from './types';

const NO_ROUTE = Object.freeze({ noRoute: true as const });

function isIp6(a: bigint): boolean {
  return typeof a === 'bigint' && a >= 0n && a <= MAX_IP6;
}

function isValidPrefix6(p: Prefix6): boolean {
  return Number.isInteger(p.len) && p.len >= 0 && p.len <= 128 && isIp6(p.addr) && (p.addr & maskOf6(p.len)) === p.addr;
}

function isUint32(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 0xffffffff;
}

function addRef<K>(m: Map<K, number>, k: K): void {
  m.set(k, (m.get(k) ?? 0) + 1);
}

function unref<K>(m: Map<K, number>, k: K): void {
  const n = m.get(k) ?? 0;
  if (n <= 1) m.delete(k);
  else m.set(k, n - 1);
}

export class RouteTable6 {
  private readonly byLen = new Map<number, Map<bigint, Route6>>();
  /** the maps of byLen, longest prefix length first, and their netmasks */
  private levels: Map<bigint, Route6>[] = [];
  private masks: bigint[] = [];
  /** peer underlay address -> number of routes naming it */
  private readonly peers4 = new Map<number, number>();
  private readonly peers6 = new Map<bigint, number>();
  private count = 0;
  private readonly hits: LRUCache<bigint, Route6> | undefined;
  private readonly misses: LRUCache<bigint, typeof NO_ROUTE> | undefined;

  constructor(opts?: RouteTableOptions) {
    const size = opts?.cacheSize ?? DEFAULT_ROUTE_CACHE_SIZE;
    if (!Number.isInteger(size) || size < 0) throw new RangeError(`cacheSize must be a non-negative integer, got ${size}`);
    if (size > 0) {
      this.hits = new LRUCache<bigint, Route6>({ max: size });
      this.misses = new LRUCache<bigint, typeof NO_ROUTE>({ max: size });
    }
  }

  /**
   * Adds the route, or changes the peer addresses of the existing route for exactly that
   * subnet. Throws RangeError when the subnet is not a valid prefix (len 0..128, host bits
   * zero), publicIp is not a uint32 or publicIpv6 not a 128-bit address. Re-upserting an
   * identical route changes nothing.
   */
  upsert(route: Route6): void {
    const { subnet, publicIp, publicIpv6 } = route;
    if (!isValidPrefix6(subnet)) throw new RangeError(`invalid IPv6 route subnet ${String(subnet.addr)}/${subnet.len}`);
    if (!isUint32(publicIp)) throw new RangeError(`invalid peer address ${publicIp} for ${formatPrefix6(subnet)}`);
    if (publicIpv6 !== undefined && !isIp6(publicIpv6)) throw new RangeError(`invalid peer IPv6 address for ${formatPrefix6(subnet)}`);
    let m = this.byLen.get(subnet.len);
    const old = m?.get(subnet.addr);
    if (old !== undefined && old.publicIp === publicIp && old.publicIpv6 === publicIpv6) return;
    if (m === undefined) {
      m = new Map();
      this.byLen.set(subnet.len, m);
      this.reindexLengths();
    }
    const stored: Route6 = publicIpv6 === undefined
      ? Object.freeze({ subnet: Object.freeze({ addr: subnet.addr, len: subnet.len }), publicIp })
      : Object.freeze({ subnet: Object.freeze({ addr: subnet.addr, len: subnet.len }), publicIp, publicIpv6 });
    m.set(subnet.addr, stored);
    if (old !== undefined) this.unrefPeers(old);
    else this.count++;
    addRef(this.peers4, publicIp);
    if (publicIpv6 !== undefined) addRef(this.peers6, publicIpv6);
    this.invalidate();
  }

  /** Removes the route for exactly `subnet`; true if it existed. */
  remove(subnet: Prefix6): boolean {
    const m = this.byLen.get(subnet.len);
    const old = m?.get(subnet.addr);
    if (m === undefined || old === undefined) return false;
    m.delete(subnet.addr);
    if (m.size === 0) {
      this.byLen.delete(subnet.len);
      this.reindexLengths();
    }
    this.count--;
    this.unrefPeers(old);
    this.invalidate();
    return true;
  }

  /** Longest-prefix match for `dst` (a 128-bit address), served from the cache when possible. */
  lookup(dst: bigint): Route6 | undefined {
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

  /** True when some route's publicIp (IPv4 underlay, uint32) is `publicIp`. */
  isKnownPeer4(publicIp: number): boolean {
    return this.peers4.has(publicIp >>> 0);
  }

  /** True when some route's publicIpv6 is `publicIpv6`. */
  isKnownPeer6(publicIpv6: bigint): boolean {
    return this.peers6.has(publicIpv6);
  }

  get size(): number {
    return this.count;
  }

  /** Entries currently in the destination caches (diagnostics and tests). */
  cacheEntries(): { positive: number; negative: number } {
    return { positive: this.hits?.size ?? 0, negative: this.misses?.size ?? 0 };
  }

  /** Snapshot of all routes, sorted by subnet address, then by prefix length (shorter first). */
  routes(): Route6[] {
    const out: Route6[] = [];
    for (const m of this.byLen.values()) for (const r of m.values()) out.push(r);
    out.sort((a, b) => (a.subnet.addr < b.subnet.addr ? -1 : a.subnet.addr > b.subnet.addr ? 1 : a.subnet.len - b.subnet.len));
    return out;
  }

  /** The route for exactly `subnet`, if any. */
  get(subnet: Prefix6): Route6 | undefined {
    return this.byLen.get(subnet.len)?.get(subnet.addr);
  }

  clear(): void {
    if (this.count === 0) return;
    this.byLen.clear();
    this.peers4.clear();
    this.peers6.clear();
    this.levels = [];
    this.masks = [];
    this.count = 0;
    this.invalidate();
  }

  private match(dst: bigint): Route6 | undefined {
    const levels = this.levels;
    const masks = this.masks;
    for (let i = 0; i < levels.length; i++) {
      const r = levels[i]!.get(dst & masks[i]!);
      if (r !== undefined) return r;
    }
    return undefined;
  }

  private reindexLengths(): void {
    const lens = [...this.byLen.keys()].sort((a, b) => b - a);
    this.levels = lens.map((len) => this.byLen.get(len)!);
    this.masks = lens.map((len) => maskOf6(len));
  }

  private unrefPeers(r: Route6): void {
    unref(this.peers4, r.publicIp);
    if (r.publicIpv6 !== undefined) unref(this.peers6, r.publicIpv6);
  }

  private invalidate(): void {
    if (this.hits !== undefined && this.hits.size > 0) this.hits.clear();
    if (this.misses !== undefined && this.misses.size > 0) this.misses.clear();
  }
}
