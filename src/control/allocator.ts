/**
 * Subnet allocation, pure: which subnets of the config's range [SubnetMin, SubnetMax] are
 * free given the leases in etcd, and a random pick among them.
 *
 * flannel picks at random among the first 100 free subnets from SubnetMin; overlayd picks
 * uniformly among all free subnets, which makes concurrent acquirers collide less.
 */
import { formatIp, formatPrefix, maskOf, prefixSize, type Prefix } from '../net/addr';
import { formatIp6, formatPrefix6, maskOf6, type Prefix6 } from '../net/addr6';
import type { Ipv6NetworkConfig, NetworkConfig } from './source';

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

// ---- IPv6 (dual-stack): the same, on 128-bit addresses ----

function subnetSize6(c: Ipv6NetworkConfig): bigint {
  return 1n << BigInt(128 - c.subnetLen);
}

/** How many IPv6 subnets lie in [IPv6SubnetMin, IPv6SubnetMax] (may exceed 2^53). */
export function rangeCount6(c: Ipv6NetworkConfig): bigint {
  return (c.subnetMax - c.subnetMin) / subnetSize6(c) + 1n;
}

/** flannel's isIPv6SubnetConfigCompat for a present subnet: length IPv6SubnetLen, aligned, inside [IPv6SubnetMin, IPv6SubnetMax]. */
export function isSubnet6InRange(c: Ipv6NetworkConfig, subnet: Prefix6): boolean {
  return subnet.len === c.subnetLen && (subnet.addr & maskOf6(c.subnetLen)) === subnet.addr && subnet.addr >= c.subnetMin && subnet.addr <= c.subnetMax;
}

/** The IPv6 subnets currently leased (as TakenSubnets; bigints compare by value in a Set). */
export class TakenSubnets6 {
  private readonly exact = new Set<bigint>();
  private readonly wide: Array<readonly [bigint, bigint]> = [];
  private readonly mask: bigint;

  constructor(private readonly subnetLen: number, leased: Iterable<Prefix6> = []) {
    this.mask = maskOf6(subnetLen);
    for (const p of leased) this.add(p);
  }

  add(p: Prefix6): void {
    if (p.len >= this.subnetLen) this.exact.add(p.addr & this.mask);
    else this.wide.push([p.addr, p.addr + (1n << BigInt(128 - p.len)) - 1n]);
  }

  has(addr: bigint): boolean {
    if (this.exact.has(addr)) return true;
    for (const [first, last] of this.wide) if (addr >= first && addr <= last) return true;
    return false;
  }
}

/** A uniform random integer in [0, n) from `random` ([0,1) floats, 32 bits per draw). */
function randomBelow(n: bigint, random: () => number): bigint {
  let v = 0n;
  let bits = 0;
  const need = n.toString(2).length + 32;
  for (let i = 0; bits < need && i < 8; i++, bits += 32) v = (v << 32n) | BigInt(Math.floor(random() * 0x1_0000_0000) >>> 0);
  return v % n;
}

/**
 * A random free IPv6 subnet of [IPv6SubnetMin, IPv6SubnetMax] (uniform among the free ones
 * when the range is small enough to enumerate, else random probes then a scan from a random
 * start), or undefined when every one is taken.
 */
export function chooseFreeSubnet6(c: Ipv6NetworkConfig, taken: TakenSubnets6, random: () => number = Math.random): Prefix6 | undefined {
  const n = rangeCount6(c);
  const size = subnetSize6(c);
  const at = (i: bigint): bigint => c.subnetMin + i * size;
  if (n <= BigInt(ENUMERATE_LIMIT)) {
    const free: bigint[] = [];
    for (let i = 0n; i < n; i++) if (!taken.has(at(i))) free.push(at(i));
    if (free.length === 0) return undefined;
    return { addr: free[Math.min(free.length - 1, Math.floor(random() * free.length))] ?? 0n, len: c.subnetLen };
  }
  for (let k = 0; k < RANDOM_PROBES; k++) {
    const addr = at(randomBelow(n, random));
    if (!taken.has(addr)) return { addr, len: c.subnetLen };
  }
  // more than 65,536 subnets and 64 random probes all taken: scan (bounded by the leases held)
  const start = randomBelow(n, random);
  for (let k = 0n; k < n; k++) {
    const addr = at((start + k) % n);
    if (!taken.has(addr)) return { addr, len: c.subnetLen };
  }
  return undefined;
}

/** The message of the "IPv6Network exhausted" LeaseError. */
export function exhaustedMessage6(c: Ipv6NetworkConfig): string {
  return (
    `no free IPv6 subnet in IPv6Network ${formatPrefix6(c.network)}: all ${rangeCount6(c)} subnets of length /${c.subnetLen} ` +
    `between IPv6SubnetMin ${formatIp6(c.subnetMin)} and IPv6SubnetMax ${formatIp6(c.subnetMax)} are leased ` +
    `(free one with etcdctl del, or widen the IPv6Network/IPv6SubnetMin/IPv6SubnetMax)`
  );
}
