/**
 * IPv4 header parsing, validation, checksums and the TTL rule, on raw packet bytes.
 *
 * Contract for every function here:
 * - `pkt` holds one IPv4 packet starting at offset 0 (a Buffer is a Uint8Array and works
 *   as is). The functions read, and `decrementTtl` writes, `pkt` in place; none keeps a
 *   reference to it and none allocates, so they are safe on the per-packet hot path.
 * - Multi-byte header fields are big-endian on the wire; addresses come back as uint32 in
 *   host order as defined in `./addr` (10.0.0.1 = 0x0a000001).
 * - The accessors do no bounds checking: call them only after `validateIpv4` returned
 *   IPV4_OK, or after checking `len >= IPV4_MIN_HEADER` yourself.
 *
 * Checksums follow RFC 1071: the one's-complement of the one's-complement sum of the
 * 16-bit big-endian words. The native core (native/src/packet.c) implements the same rules;
 * keep the two in step.
 */

export const IPV4_MIN_HEADER = 20;
/** Largest header: IHL 15 -> 60 bytes. */
export const IPV4_MAX_HEADER = 60;

export const PROTO_ICMP = 1, PROTO_TCP = 6, PROTO_UDP = 17;

/** validateIpv4 result codes */
export const IPV4_OK = 0, IPV4_TOO_SHORT = 1, IPV4_BAD_VERSION = 2, IPV4_BAD_IHL = 3, IPV4_BAD_LENGTH = 4, IPV4_BAD_CHECKSUM = 5;
export type Ipv4Check = 0 | 1 | 2 | 3 | 4 | 5;

/** Stable names of the validateIpv4 codes, indexed by code (for logs and tests, not per packet). */
export const IPV4_CHECK_NAMES: readonly string[] = Object.freeze([
  'ok', 'too_short', 'bad_version', 'bad_ihl', 'bad_length', 'bad_checksum',
]);

/** Flag bits of the 16-bit flags/fragment-offset word (bytes 6-7). */
export const IPV4_FLAG_DF = 0x4000, IPV4_FLAG_MF = 0x2000;
const FRAG_OFFSET_MASK = 0x1fff;

/** Byte offsets of the header fields. */
export const IPV4_OFF_TTL = 8, IPV4_OFF_PROTO = 9, IPV4_OFF_CHECKSUM = 10, IPV4_OFF_SRC = 12, IPV4_OFF_DST = 16;

/**
 * The folded (not complemented) one's-complement sum of bytes [start, end) of `buf`, added
 * to `initial` (a previous folded sum, 0..0xffff). A trailing odd byte is padded with a
 * zero low byte (RFC 1071). Returns 0..0xffff, and 0 only when every word (and `initial`)
 * is 0. The sum is folded through 32-bit operations, so end - start must not exceed
 * 131070 bytes (IPv4 packets are at most 65535).
 */
export function onesComplementSum(buf: Uint8Array, start: number, end: number, initial = 0): number {
  let sum = initial;
  let i = start;
  const even = end - ((end - start) & 1);
  for (; i < even; i += 2) sum += (buf[i]! << 8) | buf[i + 1]!;
  if (i < end) sum += buf[i]! << 8;
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  return sum;
}

/** RFC 1071 Internet checksum of bytes [start, end) of `buf`: ~sum, 0..0xffff. */
export function internetChecksum(buf: Uint8Array, start: number, end: number): number {
  return ~onesComplementSum(buf, start, end) & 0xffff;
}

/**
 * Checks a packet of `len` bytes at offset 0 of `pkt`: len >= 20, version 4, IHL >= 5 and
 * IHL*4 <= len, total length field === len exactly (a tunnel datagram carries exactly one
 * packet), header checksum valid. Checks run in that order; the first failure is returned.
 * A `len` larger than `pkt.length` (the buffer cannot hold what the caller claims) is
 * reported as IPV4_TOO_SHORT. The checksum is verified the RFC 1071 way (sum over the
 * whole header including the checksum field is 0xffff), so both encodings of zero are
 * accepted.
 */
export function validateIpv4(pkt: Uint8Array, len: number): Ipv4Check {
  if (len < IPV4_MIN_HEADER || len > pkt.length) return IPV4_TOO_SHORT;
  const b0 = pkt[0]!;
  if (b0 >>> 4 !== 4) return IPV4_BAD_VERSION;
  const hlen = (b0 & 0x0f) << 2;
  if (hlen < IPV4_MIN_HEADER || hlen > len) return IPV4_BAD_IHL;
  if (((pkt[2]! << 8) | pkt[3]!) !== len) return IPV4_BAD_LENGTH;
  if (onesComplementSum(pkt, 0, hlen) !== 0xffff) return IPV4_BAD_CHECKSUM;
  return IPV4_OK;
}

/** Header length in bytes (IHL * 4), 0..60; not validated. */
export function ipv4HeaderLen(pkt: Uint8Array): number {
  return (pkt[0]! & 0x0f) << 2;
}

/** The total length field, bytes. */
export function ipv4TotalLen(pkt: Uint8Array): number {
  return (pkt[2]! << 8) | pkt[3]!;
}

/** The identification field. */
export function ipv4Id(pkt: Uint8Array): number {
  return (pkt[4]! << 8) | pkt[5]!;
}

export function ipv4Ttl(pkt: Uint8Array): number {
  return pkt[IPV4_OFF_TTL]!;
}

export function ipv4Proto(pkt: Uint8Array): number {
  return pkt[IPV4_OFF_PROTO]!;
}

/** Source address, uint32 host order. */
export function ipv4Src(pkt: Uint8Array): number {
  return ((pkt[12]! << 24) | (pkt[13]! << 16) | (pkt[14]! << 8) | pkt[15]!) >>> 0;
}

/** Destination address, uint32 host order. */
export function ipv4Dst(pkt: Uint8Array): number {
  return ((pkt[16]! << 24) | (pkt[17]! << 16) | (pkt[18]! << 8) | pkt[19]!) >>> 0;
}

/** Fragment offset in 8-byte units (0..8191). */
export function ipv4FragOffset(pkt: Uint8Array): number {
  return ((pkt[6]! << 8) | pkt[7]!) & FRAG_OFFSET_MASK;
}

/** The MF (more fragments) flag. */
export function ipv4MoreFragments(pkt: Uint8Array): boolean {
  return (pkt[6]! & (IPV4_FLAG_MF >>> 8)) !== 0;
}

/** The DF (don't fragment) flag. */
export function ipv4DontFragment(pkt: Uint8Array): boolean {
  return (pkt[6]! & (IPV4_FLAG_DF >>> 8)) !== 0;
}

/** True for every fragment but the first (fragment offset != 0); the MF flag does not matter. */
export function ipv4IsNonFirstFragment(pkt: Uint8Array): boolean {
  return ipv4FragOffset(pkt) !== 0;
}

/**
 * Full header checksum (RFC 1071) over `hlen` bytes with the checksum field taken as 0.
 * The value to store big-endian at bytes 10-11. Never returns 0xffff for a header whose
 * other words are not all zero (one's-complement addition of non-zero words never yields
 * +0), so it is the canonical encoding.
 */
export function ipv4HeaderChecksum(pkt: Uint8Array, hlen: number): number {
  const before = onesComplementSum(pkt, 0, IPV4_OFF_CHECKSUM);
  return ~onesComplementSum(pkt, IPV4_OFF_CHECKSUM + 2, hlen, before) & 0xffff;
}

/** Recomputes and stores the header checksum of the header at offset 0 (IHL taken from byte 0). */
export function ipv4SetHeaderChecksum(pkt: Uint8Array): void {
  const c = ipv4HeaderChecksum(pkt, ipv4HeaderLen(pkt));
  pkt[IPV4_OFF_CHECKSUM] = c >>> 8;
  pkt[IPV4_OFF_CHECKSUM + 1] = c & 0xff;
}

/**
 * The TTL rule, the one place in TypeScript that applies it.
 * If TTL > 1: TTL -= 1 and the checksum updated incrementally per RFC 1624 eqn. 3
 * (HC' = ~(~HC + ~m + m'), m = the 16-bit word TTL|protocol at bytes 8-9), returns true.
 * Eqn. 3, unlike eqn. 2, gives the same result as a full recomputation, including when
 * the new sum is -0 (HC' = 0x0000, never 0xffff). An incoming checksum that was wrong
 * stays exactly as wrong; validate first.
 * If TTL <= 1: leaves the packet untouched and returns false (the caller drops it and may
 * answer ICMP time exceeded).
 */
export function decrementTtl(pkt: Uint8Array): boolean {
  const ttl = pkt[IPV4_OFF_TTL]!;
  if (ttl <= 1) return false;
  const proto = pkt[IPV4_OFF_PROTO]!;
  const m = (ttl << 8) | proto;
  const m2 = ((ttl - 1) << 8) | proto;
  const hc = (pkt[IPV4_OFF_CHECKSUM]! << 8) | pkt[IPV4_OFF_CHECKSUM + 1]!;
  let sum = (~hc & 0xffff) + (~m & 0xffff) + m2;
  sum = (sum & 0xffff) + (sum >>> 16);
  sum = (sum & 0xffff) + (sum >>> 16);
  const hc2 = ~sum & 0xffff;
  pkt[IPV4_OFF_TTL] = ttl - 1;
  pkt[IPV4_OFF_CHECKSUM] = hc2 >>> 8;
  pkt[IPV4_OFF_CHECKSUM + 1] = hc2 & 0xff;
  return true;
}
