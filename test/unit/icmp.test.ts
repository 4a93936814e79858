import t from 'tap';
import {
  ICMP_DEST_UNREACH, ICMP_ECHO_REPLY, ICMP_ECHO_REQUEST, ICMP_ERROR_TOS, ICMP_FRAG_NEEDED, ICMP_NET_UNREACH,
  ICMP_TIME_EXCEEDED, ICMP_TTL_EXCEEDED, buildIcmpError, isIcmpErrorType, mayRespondWithIcmpError,
} from '../../src/net/icmp';
import { IPV4_OK, PROTO_ICMP, PROTO_TCP, PROTO_UDP, validateIpv4 } from '../../src/net/ipv4';
import { parseIp } from '../../src/net/addr';
import { Rng, buildIcmp, buildIpv4, decodeIcmpError } from '../helpers/packets';

function ip(s: string): number {
  const n = parseIp(s);
  if (n === undefined) throw new Error(`bad test address ${s}`);
  return n;
}

const TUN = ip('10.244.3.0');
const POD = ip('10.244.3.5');
const FAR = ip('10.244.9.7');

t.test('constants', async (t) => {
  t.same([ICMP_DEST_UNREACH, ICMP_TIME_EXCEEDED, ICMP_NET_UNREACH, ICMP_FRAG_NEEDED, ICMP_TTL_EXCEEDED], [3, 11, 0, 4, 0]);
  t.same([0, 3, 4, 5, 8, 11, 12, 13].map(isIcmpErrorType), [false, true, true, true, false, true, true, false]);
});

t.test('net unreachable for a UDP packet: headers, checksums, quote', async (t) => {
  const payload = Buffer.alloc(100);
  for (let i = 0; i < payload.length; i++) payload[i] = i;
  const off = buildIpv4({ src: POD, dst: FAR, proto: PROTO_UDP, ttl: 63, df: true, id: 0x4242, payload });
  const offCopy = Buffer.from(off);
  const out = buildIcmpError(ICMP_DEST_UNREACH, ICMP_NET_UNREACH, TUN, off, off.length);
  const d = decodeIcmpError(out);
  t.same(off, offCopy, 'offending packet not modified');
  t.equal(d.version, 4);
  t.equal(d.ihl, 5);
  t.equal(d.totalLen, out.length, 'total length field = buffer length');
  t.equal(out.length, 20 + 8 + 20 + 8, 'IP + ICMP header + offending header + 8 bytes');
  t.equal(d.ipChecksumOk, true, 'IP header checksum');
  t.equal(validateIpv4(out, out.length), IPV4_OK, 'validateIpv4 agrees');
  t.equal(d.icmpChecksumOk, true, 'ICMP checksum');
  t.equal(d.src, TUN, 'src = from');
  t.equal(d.dst, POD, 'dst = offending source');
  t.equal(d.ttl, 64);
  t.equal(d.proto, PROTO_ICMP);
  t.equal(d.df, false, 'DF clear even though the offending packet had DF');
  t.equal(d.mf, false);
  t.equal(d.fragOffset, 0);
  t.equal(d.tos, ICMP_ERROR_TOS);
  t.equal(d.type, ICMP_DEST_UNREACH);
  t.equal(d.code, ICMP_NET_UNREACH);
  t.equal(d.unused, 0);
  t.equal(d.mtu, 0, 'bytes 6-7 zero for code 0');
  t.same(d.quote, off.subarray(0, 28), 'quote = offending header + first 8 payload bytes');
});

t.test('fragmentation needed carries the next-hop MTU', async (t) => {
  const off = buildIpv4({ src: POD, dst: FAR, df: true, payload: Buffer.alloc(1480, 0xab) });
  const d = decodeIcmpError(buildIcmpError(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, TUN, off, off.length, 1472));
  t.equal(d.type, 3);
  t.equal(d.code, 4);
  t.equal(d.unused, 0, 'bytes 4-5 zero');
  t.equal(d.mtu, 1472, 'bytes 6-7 = next-hop MTU');
  t.ok(d.ipChecksumOk && d.icmpChecksumOk);
  const noMtu = decodeIcmpError(buildIcmpError(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, TUN, off, off.length));
  t.equal(noMtu.mtu, 0, 'omitted MTU is 0 (RFC 1191 old-style)');
  t.ok(noMtu.icmpChecksumOk);
  const big = decodeIcmpError(buildIcmpError(ICMP_DEST_UNREACH, ICMP_FRAG_NEEDED, TUN, off, off.length, 0xffff));
  t.equal(big.mtu, 0xffff);
  t.ok(big.icmpChecksumOk);
});

t.test('time exceeded ignores the MTU argument', async (t) => {
  const off = buildIpv4({ src: POD, dst: FAR, ttl: 1, proto: PROTO_TCP, payload: Buffer.alloc(40, 1) });
  const d = decodeIcmpError(buildIcmpError(ICMP_TIME_EXCEEDED, ICMP_TTL_EXCEEDED, TUN, off, off.length, 1400));
  t.equal(d.type, 11);
  t.equal(d.code, 0);
  t.equal(d.unused, 0);
  t.equal(d.mtu, 0, 'rest of header is zero for type 11');
  t.same(d.quote, off.subarray(0, 28));
  t.equal(d.quote[8], 1, 'quoted TTL is the offending TTL as received');
  t.ok(d.ipChecksumOk && d.icmpChecksumOk);
});

t.test('quote length: options, short payloads, odd ICMP length', async (t) => {
  const opts = buildIpv4({ ihl: 15, options: Buffer.alloc(40, 0x01), src: POD, payload: Buffer.alloc(20, 0x55) });
  const d1 = decodeIcmpError(buildIcmpError(3, 0, TUN, opts, opts.length));
  t.equal(d1.quote.length, 60 + 8, 'whole 60-byte header + 8');
  t.same(d1.quote, opts.subarray(0, 68));
  t.ok(d1.icmpChecksumOk);

  for (let n = 0; n <= 8; n++) {
    const short = buildIpv4({ src: POD, payload: Buffer.alloc(n, 0xc3) });
    const out = buildIcmpError(3, 0, TUN, short, short.length);
    const d = decodeIcmpError(out);
    if (d.quote.length !== 20 + n || !d.quote.equals(short) || !d.icmpChecksumOk || !d.ipChecksumOk || d.totalLen !== out.length) {
      t.fail(`payload ${n}: quote ${d.quote.length} bytes, icmp checksum ${d.icmpChecksumOk}`);
      return;
    }
  }
  t.pass('payloads of 0..8 bytes quoted whole; odd ICMP lengths checksum correctly');

  // offendingLen smaller than the buffer: only offendingLen bytes are considered
  const buf = Buffer.concat([buildIpv4({ src: POD, payload: Buffer.alloc(3, 9) }), Buffer.alloc(50, 0xff)]);
  const d2 = decodeIcmpError(buildIcmpError(3, 0, TUN, buf, 23));
  t.equal(d2.quote.length, 23);
  t.same(d2.quote, buf.subarray(0, 23));
});

t.test('random offending packets round-trip through the decoder', async (t) => {
  const rng = new Rng(0x792);
  for (let i = 0; i < 500; i++) {
    const ihl = rng.int(5, 15);
    const off = buildIpv4({
      ihl, options: rng.bytes(ihl * 4 - 20), src: rng.u32(), dst: rng.u32(), proto: rng.int(0, 255),
      payload: rng.bytes(rng.int(0, 30)), id: rng.int(0, 0xffff),
    });
    const from = rng.u32();
    const type = rng.pick([3, 11]);
    const code = rng.int(0, 15);
    const mtu = rng.int(0, 0xffff);
    const d = decodeIcmpError(buildIcmpError(type, code, from, off, off.length, mtu));
    const want = off.subarray(0, Math.min(off.length, ihl * 4 + 8));
    const ok = d.ipChecksumOk && d.icmpChecksumOk && d.src === from && d.dst === off.readUInt32BE(12)
      && d.type === type && d.code === code && d.quote.equals(want)
      && d.mtu === (type === 3 && code === 4 ? mtu : 0);
    if (!ok) { t.fail(`seed ${rng.seed} iteration ${i}: ${JSON.stringify({ ...d, quote: d.quote.length })}`); return; }
  }
  t.pass('500 random cases');
});

t.test('fresh id per error', async (t) => {
  const off = buildIpv4({ src: POD });
  const a = decodeIcmpError(buildIcmpError(3, 0, TUN, off, off.length));
  const b = decodeIcmpError(buildIcmpError(3, 0, TUN, off, off.length));
  t.not(a.id, b.id);
  t.equal(b.id, (a.id + 1) & 0xffff, 'sequential ids');
});

t.test('buildIcmpError argument checks', async (t) => {
  const off = buildIpv4({ src: POD });
  t.throws(() => buildIcmpError(256, 0, TUN, off, off.length), RangeError);
  t.throws(() => buildIcmpError(3, -1, TUN, off, off.length), RangeError);
  t.throws(() => buildIcmpError(3, 4, TUN, off, off.length, 65536), RangeError);
  t.throws(() => buildIcmpError(3, 4, TUN, off, off.length, 1.5), RangeError);
  t.throws(() => buildIcmpError(3, 0, TUN, off, off.length + 1), RangeError);
});

t.test('the error we build is not itself answered', async (t) => {
  const off = buildIpv4({ src: POD, dst: FAR });
  const err = buildIcmpError(3, 0, TUN, off, off.length);
  t.equal(mayRespondWithIcmpError(err, err.length), false);
});

t.test('mayRespondWithIcmpError', async (t) => {
  const icmp = (type: number, code = 0, extra = 8): Buffer =>
    buildIpv4({ src: POD, dst: FAR, proto: PROTO_ICMP, payload: buildIcmp(type, code, 0, Buffer.alloc(extra)) });
  const yes = (p: Buffer, name: string, len = p.length): void => { t.equal(mayRespondWithIcmpError(p, len), true, name); };
  const no = (p: Buffer, name: string, len = p.length): void => { t.equal(mayRespondWithIcmpError(p, len), false, name); };

  yes(buildIpv4({ src: POD, dst: FAR, proto: PROTO_UDP, payload: Buffer.alloc(8) }), 'UDP');
  yes(buildIpv4({ src: POD, dst: FAR, proto: PROTO_TCP, payload: Buffer.alloc(3) }), 'TCP with a short payload (not ICMP)');
  yes(buildIpv4({ src: POD, dst: FAR, proto: PROTO_UDP }), 'no payload at all');
  yes(icmp(ICMP_ECHO_REQUEST), 'ICMP echo request');
  yes(icmp(ICMP_ECHO_REPLY), 'ICMP echo reply');
  yes(icmp(13), 'ICMP timestamp');
  for (const type of [3, 4, 5, 11, 12]) no(icmp(type, 1), `ICMP error type ${type}`);

  const echo = icmp(ICMP_ECHO_REQUEST, 0, 0); // exactly 8 bytes of ICMP
  yes(echo, 'ICMP header of exactly 8 bytes');
  no(echo, 'ICMP header truncated to 7 bytes', echo.length - 1);
  no(echo, 'ICMP with no header at all', 20);
  const withOpts = buildIpv4({ ihl: 6, src: POD, dst: FAR, proto: PROTO_ICMP, payload: buildIcmp(ICMP_ECHO_REQUEST, 0) });
  yes(withOpts, 'ICMP type read after IP options');
  const errWithOpts = buildIpv4({ ihl: 6, options: Buffer.alloc(4, 8), src: POD, dst: FAR, proto: PROTO_ICMP, payload: buildIcmp(11, 0) });
  no(errWithOpts, 'ICMP error after IP options (option byte 8 must not be read as the type)');

  no(buildIpv4({ src: POD, dst: FAR, fragOffset: 1, mf: true, payload: Buffer.alloc(8) }), 'middle fragment');
  no(buildIpv4({ src: POD, dst: FAR, fragOffset: 185, payload: Buffer.alloc(8) }), 'last fragment');
  yes(buildIpv4({ src: POD, dst: FAR, mf: true, payload: Buffer.alloc(8) }), 'first fragment');
  // a non-first fragment of an ICMP packet: its payload bytes are not an ICMP header
  no(buildIpv4({ src: POD, dst: FAR, proto: PROTO_ICMP, fragOffset: 2, payload: buildIcmp(8, 0) }), 'ICMP non-first fragment');

  no(buildIpv4({ src: POD, dst: ip('224.0.0.1') }), 'multicast dst 224.0.0.1');
  no(buildIpv4({ src: POD, dst: ip('239.255.255.250') }), 'multicast dst 239.255.255.250');
  no(buildIpv4({ src: POD, dst: ip('255.255.255.255') }), 'limited broadcast dst');
  yes(buildIpv4({ src: POD, dst: ip('240.0.0.1') }), 'class E dst is not in the list');
  yes(buildIpv4({ src: POD, dst: ip('223.255.255.255') }), 'just below multicast');

  no(buildIpv4({ src: ip('255.255.255.255'), dst: FAR }), 'broadcast src');
  no(buildIpv4({ src: 0, dst: FAR }), 'src 0.0.0.0');
  no(buildIpv4({ src: ip('127.0.0.1'), dst: FAR }), 'loopback src');
  no(buildIpv4({ src: ip('127.255.0.9'), dst: FAR }), 'loopback src 127.255.0.9');
  no(buildIpv4({ src: ip('224.0.0.5'), dst: FAR }), 'multicast src');
  no(buildIpv4({ src: ip('240.0.0.1'), dst: FAR }), 'class E src');
  no(buildIpv4({ src: ip('254.1.2.3'), dst: FAR }), 'class E src 254.1.2.3');
  yes(buildIpv4({ src: ip('0.1.2.3'), dst: FAR }), '0.1.2.3 is not 0.0.0.0');
  yes(buildIpv4({ src: ip('126.255.255.255'), dst: FAR }), 'just below loopback');
  yes(buildIpv4({ src: ip('128.0.0.0'), dst: FAR }), 'just above loopback');

  const p = buildIpv4({ src: POD, dst: FAR });
  no(p, 'len 19', 19);
  no(Buffer.alloc(4), 'tiny buffer', 4);
  no(p, 'len beyond the buffer', p.length + 10);
  no(buildIpv4({ versionIhl: 0x47, src: POD, dst: FAR }), 'IHL 7 but only 20 bytes');
  no(buildIpv4({ versionIhl: 0x44, src: POD, dst: FAR }), 'IHL 4');
});
