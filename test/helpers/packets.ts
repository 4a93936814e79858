/**
 * Test-side packet builders, decoders and a seeded PRNG.
 *
 * Everything here is written independently of src/net (its own checksum through
 * Buffer.readUInt16BE and plain arithmetic), so tests that use it check the code under
 * test against a second implementation rather than against itself.
 */

/** Deterministic PRNG (mulberry32). Seed from OVERLAYD_TEST_SEED when set, else `fallback`. */
export class Rng {
  readonly seed: number;
  private state: number;

  constructor(fallback: number) {
    const env = process.env['OVERLAYD_TEST_SEED'];
    this.seed = env !== undefined && env !== '' ? Number(env) >>> 0 : fallback >>> 0;
    this.state = this.seed;
  }

  /** uniform uint32 */
  u32(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  }

  /** uniform integer in [lo, hi] */
  int(lo: number, hi: number): number {
    return lo + (this.u32() % (hi - lo + 1));
  }

  pick<T>(xs: readonly T[]): T {
    return xs[this.int(0, xs.length - 1)]!;
  }

  bytes(n: number): Buffer {
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.u32() & 0xff;
    return b;
  }
}

/** Reference RFC 1071 checksum of `b` (odd length padded with a zero byte): ~sum & 0xffff. */
export function refChecksum(b: Uint8Array): number {
  const buf = Buffer.from(b.buffer, b.byteOffset, b.byteLength);
  let sum = 0;
  for (let i = 0; i + 1 < buf.length; i += 2) sum += buf.readUInt16BE(i);
  if (buf.length % 2 === 1) sum += buf[buf.length - 1]! * 256;
  while (sum > 0xffff) sum = (sum % 0x10000) + Math.floor(sum / 0x10000);
  return 0xffff - sum;
}

/** Reference IPv4 header checksum: over hlen bytes with bytes 10-11 taken as zero. */
export function refHeaderChecksum(pkt: Uint8Array): number {
  const hlen = (pkt[0]! & 0x0f) * 4;
  const h = Buffer.from(pkt.subarray(0, hlen));
  h[10] = 0;
  h[11] = 0;
  return refChecksum(h);
}

export interface Ipv4Spec {
  /** 5..15; default 5. Option bytes (hlen - 20) come from `options` or are zero. */
  ihl?: number;
  /** raw first byte override (version/IHL), for malformed packets */
  versionIhl?: number;
  tos?: number;
  id?: number;
  df?: boolean;
  mf?: boolean;
  /** in 8-byte units */
  fragOffset?: number;
  ttl?: number;
  proto?: number;
  src?: number;
  dst?: number;
  options?: Uint8Array;
  payload?: Uint8Array;
  /** total length field override; default header + payload length */
  totalLen?: number;
  /** checksum override; default the correct one */
  checksum?: number;
}

/** Builds an IPv4 packet (header + payload) with a correct checksum unless overridden. */
export function buildIpv4(s: Ipv4Spec = {}): Buffer {
  const ihl = s.ihl ?? 5;
  const hlen = ihl * 4;
  const payload = s.payload ?? Buffer.alloc(0);
  const b = Buffer.alloc(hlen + payload.length);
  b[0] = s.versionIhl ?? (0x40 | ihl);
  b[1] = s.tos ?? 0;
  b.writeUInt16BE(s.totalLen ?? b.length, 2);
  b.writeUInt16BE(s.id ?? 0x1234, 4);
  b.writeUInt16BE((s.df ? 0x4000 : 0) | (s.mf ? 0x2000 : 0) | (s.fragOffset ?? 0), 6);
  b[8] = s.ttl ?? 64;
  b[9] = s.proto ?? 17;
  b.writeUInt32BE((s.src ?? 0x0af40201) >>> 0, 12);
  b.writeUInt32BE((s.dst ?? 0x0af40302) >>> 0, 16);
  if (s.options) Buffer.from(s.options.buffer, s.options.byteOffset, s.options.byteLength).copy(b, 20, 0, hlen - 20);
  Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).copy(b, hlen);
  b.writeUInt16BE(s.checksum ?? refHeaderChecksum(b), 10);
  return b;
}

/** Builds an ICMP message (type, code, rest-of-header, data) with a correct checksum. */
export function buildIcmp(type: number, code: number, rest = 0, data: Uint8Array = Buffer.alloc(0)): Buffer {
  const b = Buffer.alloc(8 + data.length);
  b[0] = type;
  b[1] = code;
  b.writeUInt32BE(rest >>> 0, 4);
  Buffer.from(data.buffer, data.byteOffset, data.byteLength).copy(b, 8);
  b.writeUInt16BE(refChecksum(b), 2);
  return b;
}

export interface DecodedIcmpError {
  version: number;
  ihl: number;
  tos: number;
  totalLen: number;
  id: number;
  df: boolean;
  mf: boolean;
  fragOffset: number;
  ttl: number;
  proto: number;
  src: number;
  dst: number;
  /** the IP header checksum verifies (sum over the header is 0xffff) */
  ipChecksumOk: boolean;
  type: number;
  code: number;
  /** the ICMP checksum verifies over the whole ICMP message */
  icmpChecksumOk: boolean;
  /** bytes 4-5 of the ICMP header */
  unused: number;
  /** bytes 6-7 of the ICMP header (next-hop MTU for type 3 code 4) */
  mtu: number;
  /** the quoted bytes after the 8-byte ICMP header */
  quote: Buffer;
}

/** Decodes an IPv4+ICMP packet; throws when it is too short to hold both headers. */
export function decodeIcmpError(b: Buffer): DecodedIcmpError {
  if (b.length < 28) throw new Error(`packet too short: ${b.length}`);
  const ihl = b[0]! & 0x0f;
  const hlen = ihl * 4;
  const flags = b.readUInt16BE(6);
  const icmp = b.subarray(hlen);
  return {
    version: b[0]! >> 4,
    ihl,
    tos: b[1]!,
    totalLen: b.readUInt16BE(2),
    id: b.readUInt16BE(4),
    df: (flags & 0x4000) !== 0,
    mf: (flags & 0x2000) !== 0,
    fragOffset: flags & 0x1fff,
    ttl: b[8]!,
    proto: b[9]!,
    src: b.readUInt32BE(12),
    dst: b.readUInt32BE(16),
    ipChecksumOk: refChecksum(b.subarray(0, hlen)) === 0,
    type: icmp[0]!,
    code: icmp[1]!,
    icmpChecksumOk: refChecksum(icmp) === 0,
    unused: icmp.readUInt16BE(4),
    mtu: icmp.readUInt16BE(6),
    quote: Buffer.from(icmp.subarray(8)),
  };
}
