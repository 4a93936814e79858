/**
 * IPv6 addresses and prefixes as unsigned 128-bit bigints (the numeric value of the
 * address: ::1 = 1n, fd00:: = 0xfd00n << 112n). Strings appear only at the edges (config,
 * etcd, logs); formatting follows RFC 5952 (lower case, longest run of two or more zero
 * groups compressed, leftmost on a tie), which is what Go's net.IP.String() prints, so keys
 * written here compare equal to flannel's.
 */

export interface Prefix6 {
  /** network address, 0n..2^128-1, host bits zero */
  readonly addr: bigint;
  /** prefix length, 0..128 */
  readonly len: number;
}

export const MAX_IP6 = (1n << 128n) - 1n;

const HEXTET = /^[0-9a-fA-F]{1,4}$/;
const QUAD = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

function parseGroups(part: string): bigint[] | undefined {
  if (part === '') return [];
  const out: bigint[] = [];
  const items = part.split(':');
  for (let i = 0; i < items.length; i++) {
    const it = items[i] as string;
    if (i === items.length - 1 && it.includes('.')) {
      const m = QUAD.exec(it);
      if (!m) return undefined;
      out.push(BigInt((Number(m[1]) << 8) | Number(m[2])), BigInt((Number(m[3]) << 8) | Number(m[4])));
    } else {
      if (!HEXTET.test(it)) return undefined;
      out.push(BigInt(parseInt(it, 16)));
    }
  }
  return out;
}

/**
 * Parses an IPv6 address in any RFC 4291 text form ("fd00:10:244:3::", "::ffff:1.2.3.4");
 * returns undefined when it is not one (zone ids "%eth0" are refused).
 */
export function parseIp6(s: string): bigint | undefined {
  if (s.length === 0 || s.length > 45 || s.includes('%')) return undefined;
  const dbl = s.indexOf('::');
  let groups: bigint[];
  if (dbl >= 0) {
    if (s.indexOf('::', dbl + 1) >= 0) return undefined;
    const head = parseGroups(s.slice(0, dbl));
    const tail = parseGroups(s.slice(dbl + 2));
    if (!head || !tail || head.length + tail.length > 7) return undefined;
    groups = [...head, ...new Array<bigint>(8 - head.length - tail.length).fill(0n), ...tail];
  } else {
    const all = parseGroups(s);
    if (!all || all.length !== 8) return undefined;
    groups = all;
  }
  let v = 0n;
  for (const g of groups) v = (v << 16n) | g;
  return v;
}

export function isIp6(s: string): boolean {
  return parseIp6(s) !== undefined;
}

/** RFC 5952 text of a 128-bit address; IPv4-mapped addresses print as "::ffff:a.b.c.d" (Go prints only the quad). */
export function formatIp6(a: bigint): string {
  const g: number[] = [];
  for (let i = 7; i >= 0; i--) g.push(Number((a >> BigInt(i * 16)) & 0xffffn));
  if (g[0] === 0 && g[1] === 0 && g[2] === 0 && g[3] === 0 && g[4] === 0 && g[5] === 0xffff) {
    const v4 = Number(a & 0xffffffffn);
    return `::ffff:${(v4 >>> 24) & 255}.${(v4 >>> 16) & 255}.${(v4 >>> 8) & 255}.${v4 & 255}`;
  }
  let bestAt = -1;
  let bestLen = 1;
  for (let i = 0; i < 8;) {
    if (g[i] !== 0) { i++; continue; }
    let j = i;
    while (j < 8 && g[j] === 0) j++;
    if (j - i > bestLen) { bestAt = i; bestLen = j - i; }
    i = j;
  }
  const hex = (xs: number[]): string => xs.map((x) => x.toString(16)).join(':');
  if (bestAt < 0) return hex(g);
  return `${hex(g.slice(0, bestAt))}::${hex(g.slice(bestAt + bestLen))}`;
}

/** The netmask of a prefix length (len 0 -> 0n). */
export function maskOf6(len: number): bigint {
  return len === 0 ? 0n : (MAX_IP6 >> BigInt(128 - len)) << BigInt(128 - len);
}

/**
 * Parses "addr/len" (len 0..128). With `strict` (the default) host bits must be zero.
 * Returns undefined on any malformation.
 */
export function parsePrefix6(s: string, strict = true): Prefix6 | undefined {
  const slash = s.indexOf('/');
  if (slash < 0) return undefined;
  const ip = parseIp6(s.slice(0, slash));
  const lenStr = s.slice(slash + 1);
  if (ip === undefined || !/^(12[0-8]|1[01]\d|[1-9]?\d)$/.test(lenStr)) return undefined;
  const len = Number(lenStr);
  const addr = ip & maskOf6(len);
  if (strict && addr !== ip) return undefined;
  return { addr, len };
}

export function formatPrefix6(p: Prefix6): string {
  return `${formatIp6(p.addr)}/${p.len}`;
}

export function prefix6Contains(p: Prefix6, ip: bigint): boolean {
  return (ip & maskOf6(p.len)) === p.addr;
}

/** True when `inner` lies entirely inside `outer`. */
export function prefix6Covers(outer: Prefix6, inner: Prefix6): boolean {
  return inner.len >= outer.len && prefix6Contains(outer, inner.addr);
}

export function prefix6Equals(a: Prefix6, b: Prefix6): boolean {
  return a.addr === b.addr && a.len === b.len;
}

/** A stable string key for maps: "fd00:10:244:3::/64". */
export function prefix6Key(p: Prefix6): string {
  return formatPrefix6(p);
}

/** The 16 network-order bytes of an address (for sockets and the native boundary). */
export function ip6ToBytes(a: bigint): Buffer {
  const b = Buffer.alloc(16);
  b.writeBigUInt64BE(a >> 64n, 0);
  b.writeBigUInt64BE(a & 0xffffffffffffffffn, 8);
  return b;
}

/** The address in 16 network-order bytes at `off` of `b` (caller checks the length). */
export function ip6FromBytes(b: Uint8Array, off = 0): bigint {
  let v = 0n;
  for (let i = 0; i < 16; i++) v = (v << 8n) | BigInt(b[off + i] as number);
  return v;
}
