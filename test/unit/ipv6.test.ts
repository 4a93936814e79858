import t from 'tap';
import {
  IPV6_BAD_EXT, IPV6_BAD_LENGTH, IPV6_BAD_VERSION, IPV6_CHECK_NAMES, IPV6_MAX_EXT_HEADERS, IPV6_OK, IPV6_TOO_SHORT,
  NH_AH, NH_DSTOPTS, NH_FRAGMENT, NH_HOPOPTS, NH_ICMPV6, NH_NONE, NH_ROUTING, NH_TCP, NH_UDP,
  decrementHopLimit, ipv6Dst, ipv6HopLimit, ipv6PayloadLen, ipv6Src, newIpv6Walk, validateIpv6,
} from '../../src/net/ipv6';
import {
  ICMP6_DEST_UNREACH, ICMP6_PACKET_TOO_BIG, ICMP6_TIME_EXCEEDED, buildIcmp6Error, mayRespondWithIcmp6Error,
} from '../../src/net/icmp6';
import { parseIp6 } from '../../src/net/addr6';
import { Rng } from '../helpers/packets';
import { buildIpv6, extHeader, fragHeader, icmp6Echo, ip6Bytes, ref6ChecksumOk } from '../helpers/packets6';

const A = 'fd00:10:244:2::5', B = 'fd00:10:244:3::7', TUN = 'fd00:10:244:3::';
function ip6(s: string): bigint {
  const v = parseIp6(s);
  if (v === undefined) throw new Error(`bad ${s}`);
  return v;
}

t.test('validateIpv6 accepts well-formed packets and reports the upper layer', async (t) => {
  const w = newIpv6Walk();
  const p = buildIpv6({ payload: Buffer.alloc(30, 7) });
  t.equal(validateIpv6(p, p.length, w), IPV6_OK);
  t.same(w, { proto: NH_UDP, offset: 40, nonFirstFragment: false });
  t.equal(ipv6PayloadLen(p), 30);
  t.equal(ipv6HopLimit(p), 64);
  t.equal(ipv6Src(p), ip6(A));
  t.equal(ipv6Dst(p), ip6(B));
  const chain = buildIpv6({
    ext: [extHeader(NH_HOPOPTS, 1), extHeader(NH_DSTOPTS, 2), extHeader(NH_ROUTING, 3), fragHeader(0, true), { type: NH_AH, bytes: Buffer.alloc(16) }],
    proto: NH_TCP, payload: Buffer.alloc(20),
  });
  // AH payload length is in 4-byte units minus 2: 16 bytes -> 2
  chain[40 + 8 + 16 + 24 + 8 + 1] = 2;
  t.equal(validateIpv6(chain, chain.length, w), IPV6_OK, 'hop-by-hop, dst opts, routing, first fragment, AH');
  t.same(w, { proto: NH_TCP, offset: 40 + 8 + 16 + 24 + 8 + 16, nonFirstFragment: false });
  const frag = buildIpv6({ ext: [fragHeader(185, false)], proto: NH_ICMPV6, payload: Buffer.alloc(100) });
  t.equal(validateIpv6(frag, frag.length, w), IPV6_OK);
  t.same(w, { proto: NH_ICMPV6, offset: 48, nonFirstFragment: true }, 'non-first fragment: the walk stops at the fragment data');
  const none = buildIpv6({ proto: NH_NONE });
  t.equal(validateIpv6(none, none.length, w), IPV6_OK);
  t.same(w, { proto: NH_NONE, offset: 40, nonFirstFragment: false });
  const unknown = buildIpv6({ proto: 253, payload: Buffer.alloc(3) });
  t.equal(validateIpv6(unknown, unknown.length, w), IPV6_OK, 'unknown next header is the upper layer');
  t.equal(w.proto, 253);
  // in a larger buffer at an offset (ring slot)
  const big = Buffer.alloc(300, 0xee);
  p.copy(big, 11);
  const view = big.subarray(11, 11 + p.length);
  t.equal(validateIpv6(view, p.length, w), IPV6_OK);
  t.equal(ipv6Src(view), ip6(A));
  t.equal(ipv6Dst(view), ip6(B));
});

t.test('validateIpv6 failure codes', async (t) => {
  const w = newIpv6Walk();
  t.equal(IPV6_CHECK_NAMES.length, 5);
  const good = buildIpv6({ payload: Buffer.alloc(8) });
  t.equal(validateIpv6(good, 39, w), IPV6_TOO_SHORT, 'len 39');
  t.equal(validateIpv6(good, good.length + 1, w), IPV6_TOO_SHORT, 'len beyond the buffer');
  t.equal(validateIpv6(buildIpv6({ b0: 0x45 }), 40, w), IPV6_BAD_VERSION);
  t.equal(validateIpv6(buildIpv6({ payloadLen: 9, payload: Buffer.alloc(8) }), 48, w), IPV6_BAD_LENGTH, 'payload length beyond the datagram');
  t.equal(validateIpv6(buildIpv6({ payloadLen: 7, payload: Buffer.alloc(8) }), 48, w), IPV6_BAD_LENGTH, 'trailing bytes');
  t.equal(validateIpv6(buildIpv6({ payloadLen: 0, payload: Buffer.alloc(8) }), 48, w), IPV6_BAD_LENGTH, 'jumbogram refused');
  // truncated extension headers
  t.equal(validateIpv6(buildIpv6({ next: NH_HOPOPTS }), 40, w), IPV6_BAD_EXT, 'hop-by-hop announced, nothing follows');
  const short = buildIpv6({ next: NH_ROUTING, payload: Buffer.from([17, 0, 0, 0]) });
  t.equal(validateIpv6(short, short.length, w), IPV6_BAD_EXT, 'fewer than 8 bytes of a header');
  const longer = buildIpv6({ ext: [extHeader(NH_DSTOPTS, 4)], payload: Buffer.alloc(0) });
  longer.writeUInt16BE(24, 4);
  t.equal(validateIpv6(longer.subarray(0, 40 + 24), 64, w), IPV6_BAD_EXT, 'header length beyond the packet (length field fixed too)');
  const ah = buildIpv6({ ext: [{ type: NH_AH, bytes: Buffer.alloc(8) }] });
  ah[41] = 4; // AH of (4+2)*4 = 24 bytes, only 8 present
  t.equal(validateIpv6(ah, ah.length, w), IPV6_BAD_EXT, 'AH longer than the packet');
  const many = buildIpv6({ ext: new Array(IPV6_MAX_EXT_HEADERS + 1).fill(0).map(() => extHeader(NH_DSTOPTS, 1)) });
  t.equal(validateIpv6(many, many.length, w), IPV6_BAD_EXT, 'too many extension headers');
  const max = buildIpv6({ ext: new Array(IPV6_MAX_EXT_HEADERS).fill(0).map(() => extHeader(NH_DSTOPTS, 1)) });
  t.equal(validateIpv6(max, max.length, w), IPV6_OK, 'exactly the bound');
  const fragShort = buildIpv6({ next: NH_FRAGMENT, payload: Buffer.alloc(7) });
  t.equal(validateIpv6(fragShort, fragShort.length, w), IPV6_BAD_EXT, 'truncated fragment header');
});

t.test('validateIpv6 never throws or reads out of bounds on random bytes', async (t) => {
  const rng = new Rng(61);
  const w = newIpv6Walk();
  let ok = 0;
  for (let i = 0; i < 5000; i++) {
    const ext = new Array(rng.int(0, 4)).fill(0).map(() => rng.pick([extHeader(NH_HOPOPTS, rng.int(1, 3)), extHeader(NH_ROUTING, 1), fragHeader(rng.int(0, 2), true), extHeader(NH_DSTOPTS, 2)]));
    const p = buildIpv6({ ext, payload: rng.bytes(rng.int(0, 40)) });
    // corrupt a few bytes past the fixed header, and maybe cut the packet
    for (let k = rng.int(0, 3); k > 0 && p.length > 40; k--) p[rng.int(40, p.length - 1)] = rng.u32() & 0xff;
    const len = rng.int(0, 1) === 0 ? p.length : rng.int(0, p.length);
    p.writeUInt16BE(Math.max(0, len - 40), 4);
    const r = validateIpv6(p.subarray(0, len), len, w);
    if (r === IPV6_OK) {
      ok++;
      t.ok(w.offset >= 40 && w.offset <= len, 'offset inside the packet') || t.fail(`seed ${rng.seed} iteration ${i}`);
    }
  }
  t.ok(ok > 250, `${ok} valid of 5000`);
});

t.test('decrementHopLimit', async (t) => {
  const p = buildIpv6({ hopLimit: 2 });
  const before = Buffer.from(p);
  t.equal(decrementHopLimit(p), true);
  t.equal(p[7], 1);
  before[7] = 1;
  t.same(p, before, 'only the hop limit changed');
  t.equal(decrementHopLimit(p), false, 'hop limit 1 is not forwarded');
  t.equal(p[7], 1, 'untouched');
  p[7] = 0;
  t.equal(decrementHopLimit(p), false);
  t.equal(p[7], 0);
});

t.test('mayRespondWithIcmp6Error (RFC 4443 2.4 e)', async (t) => {
  const echo = buildIpv6({ proto: NH_ICMPV6, payload: icmp6Echo(A, B, Buffer.alloc(4)) });
  t.equal(mayRespondWithIcmp6Error(echo, echo.length, ICMP6_DEST_UNREACH), true, 'echo request');
  t.equal(mayRespondWithIcmp6Error(buildIpv6({ payload: Buffer.alloc(8) }), 48, ICMP6_TIME_EXCEEDED), true, 'udp');
  for (const type of [1, 2, 3, 4, 127]) {
    const err = buildIpv6({ proto: NH_ICMPV6, payload: Buffer.from([type, 0, 0, 0, 0, 0, 0, 0]) });
    t.equal(mayRespondWithIcmp6Error(err, err.length, ICMP6_DEST_UNREACH), false, `about an ICMPv6 error type ${type}`);
  }
  const errBehindExt = buildIpv6({ ext: [extHeader(NH_DSTOPTS, 1)], proto: NH_ICMPV6, payload: Buffer.from([3, 0, 0, 0, 0, 0, 0, 0]) });
  t.equal(mayRespondWithIcmp6Error(errBehindExt, errBehindExt.length, ICMP6_DEST_UNREACH), false, 'ICMPv6 error behind an extension header');
  const noType = buildIpv6({ proto: NH_ICMPV6 });
  t.equal(mayRespondWithIcmp6Error(noType, noType.length, ICMP6_DEST_UNREACH), false, 'ICMPv6 without a type byte');
  const frag = buildIpv6({ ext: [fragHeader(10, true)], payload: Buffer.alloc(16) });
  t.equal(mayRespondWithIcmp6Error(frag, frag.length, ICMP6_DEST_UNREACH), false, 'non-first fragment');
  const first = buildIpv6({ ext: [fragHeader(0, true)], payload: Buffer.alloc(16) });
  t.equal(mayRespondWithIcmp6Error(first, first.length, ICMP6_DEST_UNREACH), true, 'first fragment');
  t.equal(mayRespondWithIcmp6Error(buildIpv6({ src: '::' }), 40, ICMP6_DEST_UNREACH), false, 'unspecified source');
  t.equal(mayRespondWithIcmp6Error(buildIpv6({ src: 'ff02::1' }), 40, ICMP6_DEST_UNREACH), false, 'multicast source');
  t.equal(mayRespondWithIcmp6Error(buildIpv6({ dst: 'ff02::16' }), 40, ICMP6_DEST_UNREACH), false, 'multicast destination');
  t.equal(mayRespondWithIcmp6Error(buildIpv6({ dst: 'ff05::2' }), 40, ICMP6_PACKET_TOO_BIG), true, 'packet too big may answer multicast');
  t.equal(mayRespondWithIcmp6Error(echo, 39, ICMP6_DEST_UNREACH), false, 'truncated header');
  t.equal(mayRespondWithIcmp6Error(buildIpv6({ next: NH_HOPOPTS }), 40, ICMP6_DEST_UNREACH), false, 'broken extension chain');
});

t.test('buildIcmp6Error: layout, quote bound and checksum (independent verification)', async (t) => {
  const rng = new Rng(62);
  for (const [type, code, param] of [[ICMP6_DEST_UNREACH, 0, 0], [ICMP6_TIME_EXCEEDED, 0, 0], [ICMP6_PACKET_TOO_BIG, 0, 1420]] as const) {
    for (const size of [0, 1, 7, 100, 1191, 1192, 1193, 1500, 9000]) {
      const data = rng.bytes(size);
      const off = buildIpv6({ proto: NH_ICMPV6, payload: icmp6Echo(A, B, data) });
      const e = buildIcmp6Error(type, code, ip6(TUN), off, off.length, param);
      const label = `type ${type} offending ${off.length} bytes`;
      t.equal(e[0]! >> 4, 6, label);
      t.equal(e.readUInt16BE(4), e.length - 40, 'payload length');
      t.equal(e[6], 58, 'next header');
      t.equal(e[7], 64, 'hop limit');
      t.same(e.subarray(8, 24), ip6Bytes(TUN), 'from the TUN address');
      t.same(e.subarray(24, 40), ip6Bytes(A), 'to the offending source');
      t.equal(e[40], type);
      t.equal(e[41], code);
      t.equal(e.readUInt32BE(44), param, 'MTU / unused');
      t.ok(e.length <= 1280, `${e.length} <= 1280`);
      t.same(e.subarray(48), off.subarray(0, Math.min(off.length, 1280 - 48)), 'quote');
      t.ok(ref6ChecksumOk(e), `checksum verifies (${label})`);
    }
  }
  const off = buildIpv6({ payload: Buffer.alloc(10) });
  t.throws(() => buildIcmp6Error(256, 0, 1n, off, off.length), RangeError);
  t.throws(() => buildIcmp6Error(1, 0, 1n, off, 39), RangeError);
  t.throws(() => buildIcmp6Error(1, 0, 1n, off, off.length + 1), RangeError);
  t.throws(() => buildIcmp6Error(2, 0, 1n, off, off.length, 2 ** 32), RangeError);
});

t.test('checksum reference agrees on a known packet', async (t) => {
  // ICMPv6 echo request fe80::1 -> fe80::2, id 0x77, no data: checksum computed by hand
  // pseudo: fe80+1 + fe80+2 + 8 + 58 + 0x8000 + 0x77 = 0x1fd00+3+8+58+0x8077 -> sum words
  const m = icmp6Echo('fe80::1', 'fe80::2', Buffer.alloc(0));
  let sum = 0xfe80 + 1 + 0xfe80 + 2 + 8 + 58 + 0x8000 + 0x77;
  while (sum > 0xffff) sum = (sum & 0xffff) + (sum >>> 16);
  t.equal(m.readUInt16BE(2), 0xffff - sum);
});
