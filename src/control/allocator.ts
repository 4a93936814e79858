/**
 * Subnet allocation, pure: which subnets of the config's range [SubnetMin, SubnetMax] are
 * free given the leases in etcd, and a random pick among them.
 *
 * flannel picks at random among the first 100 free subnets from SubnetMin; overlayd picks
 * uniformly among all free subnets, which makes concurrent acquirers collide less.
 */
import { formatIp, formatPrefix, maskOf, prefixSize, type Prefix } from '../net/addr';
import type { NetworkConfig } from './source';

/** Enumerate free subnets up to this many candidates; above it, probe at random. */
const ENUMERATE_LIMIT = 1 << 16;
const RANDOM_PROBES = 64;

export function subnetSizeOf(c: NetworkConfig): number {
  return prefixSize({ addr: 0, len: c.subnetLen });
}

/** How many subnets lie in [SubnetMin, SubnetMax]. */
export function rangeCount(c: NetworkConfig): number {
  return Math.floor((c.subnetMax - c.subnetMin) / subnetSizeOf(c)) + 1;
}

/**
 * True when `subnet` is a lease this config could have handed out: length SubnetLen and
 * inside [SubnetMin, SubnetMax] (flannel's isSubnetConfigCompat).
 */
export function isSubnetInRange(c: NetworkConfig, subnet: Prefix): boolean {
  return (
    subnet.len === c.subnetLen &&
    ((subnet.addr & maskOf(c.subnetLen)) >>> 0) === subnet.addr &&
    subnet.addr >= c.subnetMin &&
    subnet.addr <= c.subnetMax
  );
}

/** The subnets currently leased, as a fast "is this candidate taken" test. */
export class TakenSubnets {
  private readonly exact = new Set<number>();
  /** leases shorter than SubnetLen (another config's): [first, last] address ranges */
  private readonly wide: Array<readonly [number, number]> = [];
  private readonly mask: number;

  constructor(
    private readonly subnetLen: number,
    leased: Iterable<Prefix> = [],
  ) {
    this.mask = maskOf(subnetLen);
    for (const p of leased) this.add(p);
  }

  add(p: Prefix): void {
    if (p.len >= this.subnetLen) this.exact.add((p.addr & this.mask) >>> 0);
    else this.wide.push([p.addr, p.addr + prefixSize(p) - 1]);
  }

  /** Is the candidate subnet at `addr` (length SubnetLen) overlapped by any lease? */
  has(addr: number): boolean {
    if (this.exact.has(addr)) return true;
    for (const [first, last] of this.wide) if (addr >= first && addr <= last) return true;
    return false;
  }
}

/**
 * A uniformly random free subnet of [SubnetMin, SubnetMax], or undefined when every one
 * is taken. `random` returns a float in [0, 1) (Math.random by default; tests pass their own).
 */
export function chooseFreeSubnet(c: NetworkConfig, taken: TakenSubnets, random: () => number = Math.random): Prefix | undefined {
  const n = rangeCount(c);
  const size = subnetSizeOf(c);
  const at = (i: number): number => c.subnetMin + i * size;
  if (n <= ENUMERATE_LIMIT) {
    const free: number[] = [];
    for (let i = 0; i < n; i++) if (!taken.has(at(i))) free.push(at(i));
    if (free.length === 0) return undefined;
    return { addr: free[Math.min(free.length - 1, Math.floor(random() * free.length))] ?? 0, len: c.subnetLen };
  }
  for (let k = 0; k < RANDOM_PROBES; k++) {
    const addr = at(Math.min(n - 1, Math.floor(random() * n)));
    if (!taken.has(addr)) return { addr, len: c.subnetLen };
  }
  const start = Math.min(n - 1, Math.floor(random() * n));
  for (let k = 0; k < n; k++) {
    const addr = at((start + k) % n);
    if (!taken.has(addr)) return { addr, len: c.subnetLen };
  }
  return undefined;
}

/** The message of the "Network exhausted" LeaseError. */
export function exhaustedMessage(c: NetworkConfig): string {
  return (
    `no free subnet in Network ${formatPrefix(c.network)}: all ${rangeCount(c)} subnets of length /${c.subnetLen} ` +
    `between SubnetMin ${formatIp(c.subnetMin)} and SubnetMax ${formatIp(c.subnetMax)} are leased ` +
    `(free one with etcdctl del, or widen the Network/SubnetMin/SubnetMax)`
  );
}
