/**
 * IPv6 header parsing, the extension-header walk and the hop-limit rule, on raw packet bytes.
 *
 * Contract for every function here:
 * - `pkt` holds one IPv6 packet starting at offset 0. The functions read, and
 *   `decrementHopLimit` writes, `pkt` in place; none keeps a reference to it.
 *   `validateIpv6` allocates nothing (it fills a caller-owned `Ipv6Walk`); the address
 *   accessors return bigints (as in ./addr6) and so allocate.
 * - The accessors do no bounds checking: call them only after `validateIpv6` returned
 *   IPV6_OK, or after checking `len >= IPV6_HEADER_LEN` yourself.
 * IPv6 has no header checksum; upper-layer checksums use the pseudo header (RFC 8200 8.1),
 * see `ipv6PseudoHeaderSum`. The native core implements the same rules; keep them in step.
 */
import { onesComplementSum } from './ipv4';

export const IPV6_HEADER_LEN = 40;
/** The minimum link MTU of IPv6 (RFC 8200 5): ICMPv6 errors never exceed it. */
export const IPV6_MIN_MTU = 1280;

/** Next-header values of the extension headers walked, and the upper layers named here. */
export const NH_HOPOPTS = 0, NH_TCP = 6, NH_UDP = 17, NH_ROUTING = 43, NH_FRAGMENT = 44, NH_AH = 51,
  NH_ICMPV6 = 58, NH_NONE = 59, NH_DSTOPTS = 60;

/** Most extension headers walked before a packet is called malformed (RFC 8200 allows each about once). */
export const IPV6_MAX_EXT_HEADERS = 8;

/** validateIpv6 result codes */
export const IPV6_OK = 0, IPV6_TOO_SHORT = 1, IPV6_BAD_VERSION = 2, IPV6_BAD_LENGTH = 3, IPV6_BAD_EXT = 4;
export type Ipv6Check = 0 | 1 | 2 | 3 | 4;

/** Stable names of the validateIpv6 codes, indexed by code (for logs and tests, not per packet). */
export const IPV6_CHECK_NAMES: readonly string[] = Object.freeze(['ok', 'too_short', 'bad_version', 'bad_length', 'bad_ext']);

/** Byte offsets of the fixed header fields. */
export const IPV6_OFF_PAYLOAD_LEN = 4, IPV6_OFF_NEXT = 6, IPV6_OFF_HOP_LIMIT = 7, IPV6_OFF_SRC = 8, IPV6_OFF_DST = 24;

/** What the extension-header walk found; filled by validateIpv6 / walkIpv6. */
export interface Ipv6Walk {
  /**
   * The upper-layer protocol: the first next-header value that is not one of the walked
   * extension headers (Hop-by-hop, Routing, Fragment, Destination options, AH); for a
   * non-first fragment, the next header named by its Fragment header.
   */
  proto: number;
  /** byte offset of the upper-layer header (for a non-first fragment: of the fragment data) */
  offset: number;
  /** a Fragment header with a non-zero fragment offset was met */
  nonFirstFragment: boolean;
}

export function newIpv6Walk(): Ipv6Walk {
  return { proto: 0, offset: 0, nonFirstFragment: false };
}

/**
 * Walks the extension headers of the packet in bytes [0, len) of `pkt` into `out`.
 * Returns false when a header would run past `len`, or more than IPV6_MAX_EXT_HEADERS are
 * chained. The walk stops at the first unknown next header (the upper layer, whatever it
 * is), at No Next Header (59), and after a Fragment header with a non-zero offset (what
 * follows is fragment data, not a header). Does not check the fixed header: len >= 40.
 */
export function walkIpv6(pkt: Uint8Array, len: number, out: Ipv6Walk): boolean {
  let nh = pkt[IPV6_OFF_NEXT]!;
  let off = IPV6_HEADER_LEN;
  out.nonFirstFragment = false;
  for (let n = 0; ; n++) {
    if (nh !== NH_HOPOPTS && nh !== NH_ROUTING && nh !== NH_FRAGMENT && nh !== NH_DSTOPTS && nh !== NH_AH) break;
    if (n >= IPV6_MAX_EXT_HEADERS) return false;
    // every extension header starts with next-header and a length byte
    if (off + 8 > len) return false;
    let hlen: number;
    if (nh === NH_FRAGMENT) {
      hlen = 8;
      const fragOff = ((pkt[off + 2]! << 8) | pkt[off + 3]!) >>> 3;
      if (fragOff !== 0) {
        out.proto = pkt[off]!;
        out.offset = off + 8;
        out.nonFirstFragment = true;
        return true;
      }
    } else if (nh === NH_AH) {
      hlen = (pkt[off + 1]! + 2) << 2; // RFC 4302: in 4-byte units, minus 2
    } else {
      hlen = (pkt[off + 1]! + 1) << 3; // in 8-byte units, not counting the first 8
    }
    if (off + hlen > len) return false;
    nh = pkt[off]!;
    off += hlen;
  }
  out.proto = nh;
  out.offset = off;
  return true;
}

/**
 * Checks a packet of `len` bytes at offset 0 of `pkt`: len >= 40, version 6, payload length
 * field + 40 === len exactly (one packet per tunnel datagram; jumbograms are refused), the
 * extension headers walk within len (see walkIpv6, whose result lands in `out`). Checks run
 * in that order; the first failure is returned. `len` larger than pkt.length is TOO_SHORT.
 */
export function validateIpv6(pkt: Uint8Array, len: number, out: Ipv6Walk): Ipv6Check {
  if (len < IPV6_HEADER_LEN || len > pkt.length) return IPV6_TOO_SHORT;
  if (pkt[0]! >>> 4 !== 6) return IPV6_BAD_VERSION;
  if (((pkt[IPV6_OFF_PAYLOAD_LEN]! << 8) | pkt[IPV6_OFF_PAYLOAD_LEN + 1]!) + IPV6_HEADER_LEN !== len) return IPV6_BAD_LENGTH;
  if (!walkIpv6(pkt, len, out)) return IPV6_BAD_EXT;
  return IPV6_OK;
}

export function ipv6PayloadLen(pkt: Uint8Array): number {
  return (pkt[IPV6_OFF_PAYLOAD_LEN]! << 8) | pkt[IPV6_OFF_PAYLOAD_LEN + 1]!;
}

export function ipv6HopLimit(pkt: Uint8Array): number {
  return pkt[IPV6_OFF_HOP_LIMIT]!;
}

export function ipv6NextHeader(pkt: Uint8Array): number {
  return pkt[IPV6_OFF_NEXT]!;
}

function read128(pkt: Uint8Array, off: number): bigint {
  const b = Buffer.from(pkt.buffer, pkt.byteOffset + off, 16);
  return (b.readBigUInt64BE(0) << 64n) | b.readBigUInt64BE(8);
}

/** Source address as a 128-bit bigint (./addr6). */
export function ipv6Src(pkt: Uint8Array): bigint {
  return read128(pkt, IPV6_OFF_SRC);
}

/** Destination address as a 128-bit bigint (./addr6). */
export function ipv6Dst(pkt: Uint8Array): bigint {
  return read128(pkt, IPV6_OFF_DST);
}

/** Stores a 128-bit address big-endian at `off` of `buf` (allocates nothing). */
export function writeIp6(buf: Uint8Array, off: number, a: bigint): void {
  const b = Buffer.from(buf.buffer, buf.byteOffset + off, 16);
  b.writeBigUInt64BE(a >> 64n, 0);
  b.writeBigUInt64BE(a & 0xffffffffffffffffn, 8);
}

/**
 * The folded one's-complement sum (RFC 1071, not complemented) of the IPv6 pseudo header
 * (RFC 8200 8.1) of the addresses at bytes 8-39 of `pkt`, upper-layer length `ulLen` and
 * next header `nh`. Add the upper-layer bytes with onesComplementSum(…, initial = this).
 */
export function ipv6PseudoHeaderSum(pkt: Uint8Array, ulLen: number, nh: number): number {
  let sum = onesComplementSum(pkt, IPV6_OFF_SRC, IPV6_HEADER_LEN);
  sum += (ulLen >>> 16) + (ulLen & 0xffff) + nh;
  sum = (sum & 0xffff) + (sum >>> 16);
  return (sum & 0xffff) + (sum >>> 16);
}

/**
 * The hop-limit rule, the one place in TypeScript that applies it to IPv6.
 * If hop limit > 1: decrements it (no checksum in IPv6) and returns true. Else leaves the
 * packet untouched and returns false (the caller drops it and may answer time exceeded).
 */
export function decrementHopLimit(pkt: Uint8Array): boolean {
  const h = pkt[IPV6_OFF_HOP_LIMIT]!;
  if (h <= 1) return false;
  pkt[IPV6_OFF_HOP_LIMIT] = h - 1;
  return true;
}
