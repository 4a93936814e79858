/**
 * The IPv4 peer route table: the longest-prefix-match table of ./prefix-table (structure,
 * cache and ownership rules are stated there) over Route entries, addresses uint32 numbers.
 * Single-threaded: called from the JS main thread only.
 */
import { formatPrefix, maskOf } from '../net/addr';
import { PrefixTable, isUint32, type AddressOps, type RouteTableOptions } from './prefix-table';
import { samePeer, type Route } from './types';

export { DEFAULT_ROUTE_CACHE_SIZE, type RouteTableOptions } from './prefix-table';

const IPV4: AddressOps<number> = Object.freeze({
  maxLen: 32,
  label: '',
  mask: maskOf,
  key: (dst: number, mask: number) => (dst & mask) >>> 0,
  canonical: (dst: number) => dst >>> 0,
  isAddr: isUint32,
  compare: (a: number, b: number) => a - b,
  formatPrefix,
});

export class RouteTable extends PrefixTable<number, Route> {
  constructor(opts?: RouteTableOptions) {
    super(IPV4, opts);
  }

  protected freeze(route: Route): Route {
    const { subnet, publicIp } = route;
    const s = Object.freeze({ addr: subnet.addr, len: subnet.len });
    return Object.freeze(route.partialChecksums === true ? { subnet: s, publicIp, partialChecksums: true as const } : { subnet: s, publicIp });
  }

  protected override samePeers(a: Route, b: Route): boolean {
    return samePeer(a, b);
  }
}
