/**
 * ICMPv6 error messages the data plane originates (RFC 4443): destination unreachable
 * (no route), packet too big (path MTU discovery) and time exceeded (hop limit).
 *
 * `mayRespondWithIcmp6Error` reads the offending packet in place and allocates nothing.
 * `buildIcmp6Error` allocates one new Buffer per call and keeps no reference to its input
 * (the rare path). The engines put the IPv4 `IcmpRateLimiter` (./icmp) in front of both
 * families: one bucket.
 */
import { onesComplementSum } from './ipv4';
import {
  IPV6_HEADER_LEN, IPV6_MIN_MTU, IPV6_OFF_DST, IPV6_OFF_SRC, NH_ICMPV6, ipv6PseudoHeaderSum, walkIpv6, writeIp6,
  type Ipv6Walk, newIpv6Walk,
} from './ipv6';

export const ICMP6_DEST_UNREACH = 1, ICMP6_PACKET_TOO_BIG = 2, ICMP6_TIME_EXCEEDED = 3, ICMP6_PARAM_PROB = 4;
/** Code of ICMP6_DEST_UNREACH: no route to destination. */
export const ICMP6_NO_ROUTE = 0;
/** Code of ICMP6_TIME_EXCEEDED: hop limit exceeded in transit. */
export const ICMP6_HOP_LIMIT_EXCEEDED = 0;

/** The ICMPv6 header: type, code, checksum, 4 type-specific bytes. */
export const ICMP6_HEADER_LEN = 8;
/** Hop limit of the errors we originate (Linux's default). */
export const ICMP6_ERROR_HOP_LIMIT = 64;

/** ICMPv6 types below 128 are error messages (RFC 4443 2.1). */
export function isIcmp6ErrorType(type: number): boolean {
  return type < 128;
}

const walk: Ipv6Walk = newIpv6Walk();

/**
 * RFC 4443 2.4 (e): false when the offending packet is itself an ICMPv6 error message
 * (type < 128, or its ICMPv6 type byte is missing), a non-first fragment, has the
 * unspecified (::) or a multicast (ff00::/8) source, or is sent to a multicast destination
 * (except for packet too big, which RFC 4443 allows there). Also false when `len` bytes do
 * not hold a walkable IPv6 header chain: such a packet cannot be quoted sensibly.
 * `len` is the number of valid bytes at offset 0 of `pkt` (at most pkt.length); the payload
 * length field is not used. Uses a module-level scratch walk: one thread (JS main thread).
 */
export function mayRespondWithIcmp6Error(pkt: Uint8Array, len: number, type: number): boolean {
  if (len < IPV6_HEADER_LEN || len > pkt.length || pkt[0]! >>> 4 !== 6) return false;
  if (pkt[IPV6_OFF_SRC] === 0xff) return false;
  let unspecified = true;
  for (let i = IPV6_OFF_SRC; i < IPV6_OFF_SRC + 16; i++) {
    if (pkt[i] !== 0) {
      unspecified = false;
      break;
    }
  }
  if (unspecified) return false;
  if (pkt[IPV6_OFF_DST] === 0xff && type !== ICMP6_PACKET_TOO_BIG) return false;
  if (!walkIpv6(pkt, len, walk)) return false;
  if (walk.nonFirstFragment) return false;
  if (walk.proto === NH_ICMPV6) {
    if (walk.offset >= len) return false;
    if (isIcmp6ErrorType(pkt[walk.offset]!)) return false;
  }
  return true;
}

/**
 * Builds a complete IPv6+ICMPv6 error packet:
 * - IPv6: version 6, traffic class 0, flow label 0, next header 58, hop limit 64,
 *   src = `from`, dst = the offending packet's source.
 * - ICMPv6: `type`/`code`, bytes 4-7 = `param` (the MTU for packet too big, the pointer for
 *   parameter problem, 0 otherwise), checksum over the pseudo header and the message.
 * - Body: as much of the offending packet as keeps the whole error within 1280 bytes
 *   (RFC 4443 2.4 (c)).
 * `from` is a 128-bit address. `offending` holds the packet at offset 0 with `offendingLen`
 * valid bytes (>= 40; call mayRespondWithIcmp6Error first); it is only read. Throws
 * RangeError on arguments outside their fields.
 */
export function buildIcmp6Error(
  type: number, code: number, from: bigint, offending: Uint8Array, offendingLen: number, param = 0,
): Buffer {
  if (!isByte(type) || !isByte(code)) throw new RangeError(`ICMPv6 type/code out of range: ${type}/${code}`);
  if (!Number.isInteger(offendingLen) || offendingLen < IPV6_HEADER_LEN || offendingLen > offending.length) {
    throw new RangeError(`offendingLen ${offendingLen} outside ${IPV6_HEADER_LEN}..${offending.length}`);
  }
  if (!Number.isInteger(param) || param < 0 || param > 0xffffffff) throw new RangeError(`ICMPv6 parameter out of range: ${param}`);
  const quoteLen = Math.min(offendingLen, IPV6_MIN_MTU - IPV6_HEADER_LEN - ICMP6_HEADER_LEN);
  const icmpLen = ICMP6_HEADER_LEN + quoteLen;
  const out = Buffer.alloc(IPV6_HEADER_LEN + icmpLen);
  out[0] = 0x60;
  out.writeUInt16BE(icmpLen, 4);
  out[6] = NH_ICMPV6;
  out[7] = ICMP6_ERROR_HOP_LIMIT;
  writeIp6(out, IPV6_OFF_SRC, from);
  out.set(offending.subarray(IPV6_OFF_SRC, IPV6_OFF_SRC + 16), IPV6_OFF_DST);
  const o = IPV6_HEADER_LEN;
  out[o] = type;
  out[o + 1] = code;
  out.writeUInt32BE(param, o + 4);
  out.set(offending.subarray(0, quoteLen), o + ICMP6_HEADER_LEN);
  const sum = onesComplementSum(out, o, out.length, ipv6PseudoHeaderSum(out, icmpLen, NH_ICMPV6));
  out.writeUInt16BE(~sum & 0xffff, o + 2);
  return out;
}

function isByte(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 255;
}
