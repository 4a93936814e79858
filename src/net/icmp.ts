/**
 * ICMPv4 error messages the data plane originates: destination unreachable (no route),
 * fragmentation needed (too big for the tunnel with DF set) and time exceeded (TTL).
 *
 * `mayRespondWithIcmpError` reads the offending packet in place and allocates nothing.
 * `buildIcmpError` allocates one new Buffer per call and keeps no reference to its input;
 * it is meant for the rare path. `IcmpRateLimiter` is the token bucket the engines put in
 * front of it (RFC 1812 4.3.2.8); the C twin is native/src/ratelimit.c.
 */
import {
  IPV4_MIN_HEADER, IPV4_OFF_CHECKSUM, PROTO_ICMP, internetChecksum, ipv4FragOffset,
  ipv4HeaderChecksum, ipv4HeaderLen, ipv4Dst, ipv4Proto, ipv4Src,
} from './ipv4';

export const ICMP_ECHO_REPLY = 0, ICMP_DEST_UNREACH = 3, ICMP_SOURCE_QUENCH = 4, ICMP_REDIRECT = 5,
  ICMP_ECHO_REQUEST = 8, ICMP_TIME_EXCEEDED = 11, ICMP_PARAMETER_PROBLEM = 12;
/** Codes of ICMP_DEST_UNREACH. */
export const ICMP_NET_UNREACH = 0, ICMP_HOST_UNREACH = 1, ICMP_FRAG_NEEDED = 4;
/** Codes of ICMP_TIME_EXCEEDED. */
export const ICMP_TTL_EXCEEDED = 0;

/** The ICMP header: type, code, checksum, 4 type-specific bytes. */
export const ICMP_HEADER_LEN = 8;
/** Payload bytes of the offending packet quoted after its IP header (RFC 792). */
export const ICMP_QUOTE_PAYLOAD = 8;
/** TTL of the errors we originate. */
export const ICMP_ERROR_TTL = 64;
/**
 * TOS of the errors we originate: precedence 6, internetwork control (RFC 1812 4.3.2.5).
 * Linux also copies the offending packet's TOS bits; we do not.
 */
export const ICMP_ERROR_TOS = 0xc0;

/** True for the ICMP types that are error messages (RFC 1812 4.3.2.7). */
export function isIcmpErrorType(type: number): boolean {
  return type === ICMP_DEST_UNREACH || type === ICMP_SOURCE_QUENCH || type === ICMP_REDIRECT
    || type === ICMP_TIME_EXCEEDED || type === ICMP_PARAMETER_PROBLEM;
}

/** 0.0.0.0/8 ("this network") is not in the list of RFC 1812 4.3.2.7; only 0.0.0.0 itself is. */
function isUnanswerableSource(src: number): boolean {
  const top = src >>> 24;
  return src === 0
    || top === 127          // loopback 127/8
    || top >= 224;          // multicast 224/4 and class E 240/4, which holds 255.255.255.255
}

function isMulticastOrBroadcast(dst: number): boolean {
  return (dst >>> 28) === 0xe || dst === 0xffffffff;
}

/**
 * RFC 1812 4.3.2.7: false when the offending packet is itself an ICMP error (types
 * 3,4,5,11,12) or has a truncated ICMP header (fewer than 8 bytes after the IP header), a
 * non-first fragment, or has a source that is 0.0.0.0, 255.255.255.255, multicast (224/4),
 * loopback (127/8) or class E, or a multicast/broadcast destination.
 * Also false when `len` bytes cannot hold the packet's IP header (len < 20, IHL < 5 or
 * IHL*4 > len): such a packet cannot be quoted. `len` is the number of valid bytes at
 * offset 0 of `pkt` (it must not exceed pkt.length); the total length field is not used.
 */
export function mayRespondWithIcmpError(pkt: Uint8Array, len: number): boolean {
  if (len < IPV4_MIN_HEADER || len > pkt.length) return false;
  const hlen = ipv4HeaderLen(pkt);
  if (hlen < IPV4_MIN_HEADER || hlen > len) return false;
  if (ipv4FragOffset(pkt) !== 0) return false;
  if (isUnanswerableSource(ipv4Src(pkt))) return false;
  if (isMulticastOrBroadcast(ipv4Dst(pkt))) return false;
  if (ipv4Proto(pkt) === PROTO_ICMP) {
    if (len - hlen < ICMP_HEADER_LEN) return false;
    if (isIcmpErrorType(pkt[hlen]!)) return false;
  }
  return true;
}

let nextId = Math.floor(Math.random() * 0x10000);

/**
 * Builds a complete IPv4+ICMP error packet:
 * - IP: version 4, IHL 5, TOS ICMP_ERROR_TOS, id from a per-process counter (starting at a
 *   random value), DF clear, offset 0, TTL 64, proto 1, src = `from`, dst = the offending
 *   packet's source, valid header checksum.
 * - ICMP: `type`/`code`, valid checksum over the whole ICMP message; bytes 4-7 zero except
 *   for type 3 code 4, where bytes 6-7 carry `nextHopMtu` (RFC 1191; 0 when omitted).
 * - Body: the offending IP header (IHL*4 bytes) and the first 8 bytes of its payload
 *   (RFC 792), fewer if `offendingLen` is shorter.
 * `from` is a uint32 address. `offending` holds the packet at offset 0 with `offendingLen`
 * valid bytes; it is only read. Call `mayRespondWithIcmpError` first: it guarantees the
 * offending header is complete. Throws RangeError on arguments outside their fields
 * (type/code not 0..255, nextHopMtu not 0..65535, offendingLen not 0..offending.length).
 */
export function buildIcmpError(
  type: number, code: number, from: number, offending: Uint8Array, offendingLen: number, nextHopMtu?: number,
): Buffer {
  if (!isByte(type) || !isByte(code)) throw new RangeError(`ICMP type/code out of range: ${type}/${code}`);
  if (!Number.isInteger(offendingLen) || offendingLen < 0 || offendingLen > offending.length) {
    throw new RangeError(`offendingLen ${offendingLen} outside 0..${offending.length}`);
  }
  const mtu = nextHopMtu ?? 0;
  if (!Number.isInteger(mtu) || mtu < 0 || mtu > 0xffff) throw new RangeError(`nextHopMtu out of range: ${mtu}`);

  const hlen = offendingLen >= IPV4_MIN_HEADER ? ipv4HeaderLen(offending) : offendingLen;
  const quoteLen = Math.min(offendingLen, hlen + ICMP_QUOTE_PAYLOAD);
  const icmpLen = ICMP_HEADER_LEN + quoteLen;
  const total = IPV4_MIN_HEADER + icmpLen;
  const out = Buffer.alloc(total);

  // IP header (zero-filled: flags/offset 0, checksum 0 while computing).
  out[0] = 0x45;
  out[1] = ICMP_ERROR_TOS;
  out.writeUInt16BE(total, 2);
  out.writeUInt16BE(nextId, 4);
  nextId = (nextId + 1) & 0xffff;
  out[8] = ICMP_ERROR_TTL;
  out[9] = PROTO_ICMP;
  out.writeUInt32BE(from >>> 0, 12);
  out.writeUInt32BE(offendingLen >= IPV4_MIN_HEADER ? ipv4Src(offending) : 0, 16);
  out.writeUInt16BE(ipv4HeaderChecksum(out, IPV4_MIN_HEADER), IPV4_OFF_CHECKSUM);

  // ICMP header and quote.
  const o = IPV4_MIN_HEADER;
  out[o] = type;
  out[o + 1] = code;
  if (type === ICMP_DEST_UNREACH && code === ICMP_FRAG_NEEDED) out.writeUInt16BE(mtu, o + 6);
  out.set(offending.subarray(0, quoteLen), o + ICMP_HEADER_LEN);
  out.writeUInt16BE(internetChecksum(out, o, total), o + 2);
  return out;
}

function isByte(n: number): boolean {
  return Number.isInteger(n) && n >= 0 && n <= 255;
}

/** Defaults of the ICMP error rate limit: Linux's net.ipv4.icmp_msgs_per_sec and icmp_msgs_burst. */
export const ICMP_RATELIMIT_RATE = 1000;
export const ICMP_RATELIMIT_BURST = 50;

/**
 * Token bucket of ICMP errors (RFC 1812 4.3.2.8), the twin of native/src/ratelimit.c: `burst`
 * tokens, refilled continuously at `rate` per second (0 = no limit); one token per error.
 * Over any E seconds at most burst + rate * E takes succeed. Kept in the GCRA form (the time
 * the bucket would be full again). `now` is a monotonic clock in milliseconds (injected by
 * tests). One thread (the JS main thread).
 */
export class IcmpRateLimiter {
  private readonly intervalMs: number;
  private readonly toleranceMs: number;
  /** ms: when the bucket is full again */
  private tat = -Infinity;

  constructor(rate: number, burst: number, private readonly now: () => number = () => performance.now()) {
    if (!Number.isInteger(rate) || rate < 0) throw new RangeError(`ICMP rate limit: rate ${rate} is not an integer >= 0`);
    if (!Number.isInteger(burst) || burst < 1) throw new RangeError(`ICMP rate limit: burst ${burst} is not an integer >= 1`);
    this.intervalMs = rate === 0 ? 0 : 1000 / rate;
    this.toleranceMs = this.intervalMs * burst;
  }

  /** True: send the error (a token taken); false: suppress it. */
  take(): boolean {
    if (this.intervalMs === 0) return true;
    const now = this.now();
    const next = Math.max(this.tat, now) + this.intervalMs;
    // a tiny slack for float rounding: never more than one extra token in 2^40
    if (next - now > this.toleranceMs * (1 + 2 ** -40)) return false;
    this.tat = next;
    return true;
  }
}
