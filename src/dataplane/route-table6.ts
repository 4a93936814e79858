/**
 * The IPv6 peer route table: the longest-prefix-match table of ./prefix-table (structure,
 * cache and ownership rules are stated there) over Route6 entries, addresses 128-bit
 * bigints (../net/addr6).
 *
 * The table also counts the peers' IPv6 underlay addresses (publicIpv6), separately from
 * the IPv4 ones (publicIp), so that inbound datagrams can be checked against known peers in
 * O(1) on either underlay.
 * Single-threaded: called from the JS main thread only.
 */
import { MAX_IP6, formatPrefix6, maskOf6 } from '../net/addr6';
import { PrefixTable, addRef, unref, type AddressOps, type RouteTableOptions } from './prefix-table';
import type { Route6 } from './types';

function isIp6(a: bigint): boolean {
  return typeof a === 'bigint' && a >= 0n && a <= MAX_IP6;
}

const IPV6: AddressOps<bigint> = Object.freeze({
  maxLen: 128,
  label: 'IPv6 ',
  mask: maskOf6,
  key: (dst: bigint, mask: bigint) => dst & mask,
  canonical: (dst: bigint) => dst,
  isAddr: isIp6,
  compare: (a: bigint, b: bigint) => (a < b ? -1 : a > b ? 1 : 0),
  formatPrefix: formatPrefix6,
});

export class RouteTable6 extends PrefixTable<bigint, Route6> {
  /** peer IPv6 underlay address -> number of routes naming it */
  private readonly peers6 = new Map<bigint, number>();

  constructor(opts?: RouteTableOptions) {
    super(IPV6, opts);
  }

  /** True when some route's publicIp (IPv4 underlay, uint32) is `publicIp`. */
  isKnownPeer4(publicIp: number): boolean {
    return this.isKnownPeer(publicIp);
  }

  /** True when some route's publicIpv6 is `publicIpv6`. */
  isKnownPeer6(publicIpv6: bigint): boolean {
    return this.peers6.has(publicIpv6);
  }

  /** Throws RangeError when publicIpv6 is present but not a 128-bit address. */
  protected override checkPeers(route: Route6): void {
    if (route.publicIpv6 !== undefined && !isIp6(route.publicIpv6)) throw new RangeError(`invalid peer IPv6 address for ${formatPrefix6(route.subnet)}`);
  }

  protected override samePeers(a: Route6, b: Route6): boolean {
    return a.publicIp === b.publicIp && a.publicIpv6 === b.publicIpv6;
  }

  protected override refPeers(r: Route6, delta: 1 | -1): void {
    super.refPeers(r, delta);
    if (r.publicIpv6 === undefined) return;
    if (delta === 1) addRef(this.peers6, r.publicIpv6);
    else unref(this.peers6, r.publicIpv6);
  }

  protected override clearPeers(): void {
    super.clearPeers();
    this.peers6.clear();
  }

  protected freeze(route: Route6): Route6 {
    const { subnet, publicIp, publicIpv6 } = route;
    const sub = Object.freeze({ addr: subnet.addr, len: subnet.len });
    return publicIpv6 === undefined
      ? Object.freeze({ subnet: sub, publicIp })
      : Object.freeze({ subnet: sub, publicIp, publicIpv6 });
  }
}
