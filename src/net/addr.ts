/**
 * IPv4 addresses and prefixes as unsigned 32-bit integers (host byte order, i.e. the
 * numeric value of the dotted quad: 10.0.0.1 = 0x0a000001). This is the hot-path
 * representation; strings appear only at the edges (config, etcd, logs).
 */

export interface Prefix {
  /** network address, uint32, host bits zero */
  readonly addr: number;
  /** prefix length, 0..32 */
  readonly len: number;
}

const QUAD = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

/** Parses a dotted-quad IPv4 address; returns undefined when it is not one. */
export function parseIp(s: string): number | undefined {
  const m = QUAD.exec(s);
  if (!m) return undefined;
  return ((Number(m[1]) << 24) | (Number(m[2]) << 16) | (Number(m[3]) << 8) | Number(m[4])) >>> 0;
}

export function isIp(s: string): boolean {
  return parseIp(s) !== undefined;
}

export function formatIp(n: number): string {
  return `${(n >>> 24) & 255}.${(n >>> 16) & 255}.${(n >>> 8) & 255}.${n & 255}`;
}

/** The netmask of a prefix length as uint32 (len 0 -> 0). */
export function maskOf(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

/**
 * Parses "a.b.c.d/len". With `strict` (the default) host bits must be zero.
 * Returns undefined on any malformation.
 */
export function parsePrefix(s: string, strict = true): Prefix | undefined {
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const ip = parseIp(s.slice(0, slash));
  const lenStr = s.slice(slash + 1);
  if (ip === undefined || !/^(3[0-2]|[12]?\d)$/.test(lenStr)) return undefined;
  const len = Number(lenStr);
  const addr = (ip & maskOf(len)) >>> 0;
  if (strict && addr !== ip) return undefined;
  return { addr, len };
}

export function formatPrefix(p: Prefix): string {
  return `${formatIp(p.addr)}/${p.len}`;
}

export function prefixContains(p: Prefix, ip: number): boolean {
  return ((ip & maskOf(p.len)) >>> 0) === p.addr;
}

/** True when `inner` lies entirely inside `outer`. */
export function prefixCovers(outer: Prefix, inner: Prefix): boolean {
  return inner.len >= outer.len && prefixContains(outer, inner.addr);
}

export function prefixEquals(a: Prefix, b: Prefix): boolean {
  return a.addr === b.addr && a.len === b.len;
}

/** Number of addresses in the prefix (2^(32-len)), exact as a JS number. */
export function prefixSize(p: Prefix): number {
  return 2 ** (32 - p.len);
}

/**
 * A compact numeric key for maps: addr * 64 + len, exact (< 2^38) and one-to-one for valid
 * prefixes. Preferred over prefixKey in maps with one entry per lease (10,000 leases: no
 * string per entry).
 */
export function prefixId(p: Prefix): number {
  return p.addr * 64 + p.len;
}

/** A stable string key for maps: "10.244.3.0/24". */
export function prefixKey(p: Prefix): string {
  return formatPrefix(p);
}
