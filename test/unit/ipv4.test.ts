import t from 'tap';
import {
  IPV4_BAD_CHECKSUM, IPV4_BAD_IHL, IPV4_BAD_LENGTH, IPV4_BAD_VERSION, IPV4_CHECK_NAMES, IPV4_MIN_HEADER, IPV4_OK,
  IPV4_TOO_SHORT, PROTO_ICMP, PROTO_TCP, PROTO_UDP, decrementTtl, internetChecksum, ipv4DontFragment,
  ipv4Dst, ipv4FragOffset, ipv4HeaderChecksum, ipv4HeaderLen, ipv4Id, ipv4IsNonFirstFragment, ipv4MoreFragments,
  ipv4Proto, ipv4SetHeaderChecksum, ipv4Src, ipv4TotalLen, ipv4Ttl, onesComplementSum, validateIpv4,
} from '../../src/net/ipv4';
import { Rng, buildIpv4, refHeaderChecksum } from '../helpers/packets';

function checksumField(p: Uint8Array): number {
  return (p[10]! << 8) | p[11]!;
}

t.test('constants', async (t) => {
  t.equal(IPV4_MIN_HEADER, 20);
  t.same([PROTO_ICMP, PROTO_TCP, PROTO_UDP], [1, 6, 17]);
  t.same([IPV4_OK, IPV4_TOO_SHORT, IPV4_BAD_VERSION, IPV4_BAD_IHL, IPV4_BAD_LENGTH, IPV4_BAD_CHECKSUM], [0, 1, 2, 3, 4, 5]);
  t.equal(IPV4_CHECK_NAMES.length, 6);
});

t.test('validateIpv4 accepts well-formed packets', async (t) => {
  t.equal(validateIpv4(buildIpv4(), 20), IPV4_OK, 'bare header');
  const p = buildIpv4({ payload: Buffer.alloc(100, 7) });
  t.equal(validateIpv4(p, p.length), IPV4_OK, 'with payload');
  const o = buildIpv4({ ihl: 15, options: Buffer.alloc(40, 1), payload: Buffer.alloc(3) });
  t.equal(validateIpv4(o, o.length), IPV4_OK, 'IHL 15 with options and odd payload');
  // checksum is over the header only: payload changes do not matter
  p[50] ^= 0xff;
  t.equal(validateIpv4(p, p.length), IPV4_OK, 'payload not covered');
  // a packet inside a larger buffer at a non-zero offset (as in a ring slot)
  const big = Buffer.alloc(200, 0xee);
  p.copy(big, 13);
  t.equal(validateIpv4(big.subarray(13, 13 + p.length), p.length), IPV4_OK, 'subarray at offset');
  t.equal(validateIpv4(new Uint8Array(p), p.length), IPV4_OK, 'plain Uint8Array');
});

t.test('validateIpv4 failure codes', async (t) => {
  const good = buildIpv4({ payload: Buffer.alloc(12) });
  t.equal(validateIpv4(good, 19), IPV4_TOO_SHORT, 'len 19');
  t.equal(validateIpv4(good, 0), IPV4_TOO_SHORT, 'len 0');
  t.equal(validateIpv4(Buffer.alloc(10), 10), IPV4_TOO_SHORT, '10-byte buffer');
  t.equal(validateIpv4(good, good.length + 1), IPV4_TOO_SHORT, 'len beyond the buffer');

  t.equal(validateIpv4(buildIpv4({ versionIhl: 0x65 }), 20), IPV4_BAD_VERSION, 'version 6');
  t.equal(validateIpv4(buildIpv4({ versionIhl: 0x05 }), 20), IPV4_BAD_VERSION, 'version 0');
  t.equal(validateIpv4(buildIpv4({ versionIhl: 0x64, totalLen: 99 }), 20), IPV4_BAD_VERSION, 'version checked before IHL and length');

  t.equal(validateIpv4(buildIpv4({ versionIhl: 0x44 }), 20), IPV4_BAD_IHL, 'IHL 4');
  t.equal(validateIpv4(buildIpv4({ versionIhl: 0x40 }), 20), IPV4_BAD_IHL, 'IHL 0');
  const ihl15 = buildIpv4({ versionIhl: 0x4f, payload: Buffer.alloc(36) }); // 56 bytes, header says 60
  t.equal(validateIpv4(ihl15, ihl15.length), IPV4_BAD_IHL, 'IHL*4 > len');
  const ihl6 = buildIpv4({ ihl: 6 }); // exactly 24 bytes: header fills the packet, fine
  t.equal(validateIpv4(ihl6, 24), IPV4_OK, 'IHL*4 == len');

  t.equal(validateIpv4(buildIpv4({ totalLen: 21, payload: Buffer.alloc(12) }), 32), IPV4_BAD_LENGTH, 'total length < len');
  t.equal(validateIpv4(buildIpv4({ totalLen: 33, payload: Buffer.alloc(12) }), 32), IPV4_BAD_LENGTH, 'total length > len');
  // two packets in one datagram: the first one's total length is less than the datagram
  const two = Buffer.concat([good, good]);
  t.equal(validateIpv4(two, two.length), IPV4_BAD_LENGTH, 'trailing bytes after the packet');
  t.equal(validateIpv4(two, good.length), IPV4_OK, 'same buffer, len = the first packet');

  const bad = Buffer.from(good);
  bad[11] ^= 0x01;
  t.equal(validateIpv4(bad, bad.length), IPV4_BAD_CHECKSUM, 'checksum bit flipped');
  const bad2 = Buffer.from(good);
  bad2[15] ^= 0x80;
  t.equal(validateIpv4(bad2, bad2.length), IPV4_BAD_CHECKSUM, 'source bit flipped');
  const optBad = buildIpv4({ ihl: 8, options: Buffer.alloc(12, 3) });
  optBad[30] ^= 0x10;
  t.equal(validateIpv4(optBad, optBad.length), IPV4_BAD_CHECKSUM, 'option byte flipped: options are covered');
});

t.test('validateIpv4 accepts both encodings of a zero checksum', async (t) => {
  // find an id for which the canonical checksum is 0x0000, then also store it as 0xffff
  let found: Buffer | undefined;
  for (let id = 0; id <= 0xffff && found === undefined; id++) {
    const p = buildIpv4({ id });
    if (checksumField(p) === 0) found = p;
  }
  if (found === undefined) throw new Error('no id gives checksum 0');
  t.equal(validateIpv4(found, 20), IPV4_OK, 'canonical 0x0000');
  found.writeUInt16BE(0xffff, 10);
  t.equal(validateIpv4(found, 20), IPV4_OK, '0xffff (-0) also verifies');
  t.equal(ipv4HeaderChecksum(found, 20), 0, 'the computed checksum is the canonical 0x0000');
});

t.test('accessors', async (t) => {
  const p = buildIpv4({
    ihl: 7, options: Buffer.alloc(8, 1), tos: 0x10, id: 0xbeef, df: true, fragOffset: 0, ttl: 255,
    proto: PROTO_TCP, src: 0xc0a80102, dst: 0xfffffffe, payload: Buffer.alloc(5),
  });
  t.equal(ipv4HeaderLen(p), 28);
  t.equal(ipv4TotalLen(p), 33);
  t.equal(ipv4Id(p), 0xbeef);
  t.equal(ipv4Ttl(p), 255);
  t.equal(ipv4Proto(p), PROTO_TCP);
  t.equal(ipv4Src(p), 0xc0a80102, 'source with the top bit set is a positive uint32');
  t.equal(ipv4Dst(p), 0xfffffffe);
  t.ok(ipv4Src(p) > 0);
  t.equal(ipv4FragOffset(p), 0);
  t.equal(ipv4DontFragment(p), true);
  t.equal(ipv4MoreFragments(p), false);
  t.equal(ipv4IsNonFirstFragment(p), false, 'DF alone is not a fragment');

  const first = buildIpv4({ mf: true, fragOffset: 0 });
  t.equal(ipv4IsNonFirstFragment(first), false, 'first fragment (MF, offset 0)');
  t.equal(ipv4MoreFragments(first), true);
  const mid = buildIpv4({ mf: true, fragOffset: 1 });
  t.equal(ipv4IsNonFirstFragment(mid), true, 'middle fragment');
  t.equal(ipv4FragOffset(mid), 1);
  const last = buildIpv4({ mf: false, df: true, fragOffset: 0x1fff });
  t.equal(ipv4FragOffset(last), 0x1fff, 'max offset, flags do not leak into it');
  t.equal(ipv4IsNonFirstFragment(last), true, 'last fragment (no MF)');
  t.equal(ipv4MoreFragments(last), false);
  const offsetHighBits = buildIpv4({ fragOffset: 0x100 });
  t.equal(ipv4FragOffset(offsetHighBits), 0x100, 'offset bits in byte 6');
  t.equal(ipv4IsNonFirstFragment(offsetHighBits), true);
  t.equal(ipv4Src(buildIpv4({ src: 0 })), 0);
  t.equal(ipv4Dst(buildIpv4({ dst: 0xffffffff })), 0xffffffff);
});

t.test('checksum primitives', async (t) => {
  // RFC 1071 section 3 example: sum of 00 01 f2 03 f4 f5 f6 f7 is ddf2 -> checksum 220d
  const ex = Buffer.from([0x00, 0x01, 0xf2, 0x03, 0xf4, 0xf5, 0xf6, 0xf7]);
  t.equal(onesComplementSum(ex, 0, 8), 0xddf2);
  t.equal(internetChecksum(ex, 0, 8), 0x220d);
  t.equal(onesComplementSum(ex, 0, 3), (0x0001 + 0xf200), 'odd length pads with a zero low byte');
  t.equal(onesComplementSum(ex, 2, 8), 0xddf1, 'sub-range: f203 + f4f5 + f6f7 with carries folded');
  t.equal(onesComplementSum(ex, 4, 8, onesComplementSum(ex, 0, 4)), 0xddf2, 'chained with initial');
  t.equal(onesComplementSum(Buffer.alloc(8), 0, 8), 0, 'all zero sums to +0');
  t.equal(onesComplementSum(Buffer.from([0xff, 0xff, 0x00, 0x01]), 0, 4), 0x0001, 'end-around carry');

  const rng = new Rng(0x1071);
  for (let i = 0; i < 2000; i++) {
    const ihl = rng.int(5, 15);
    const p = buildIpv4({
      ihl, options: rng.bytes(ihl * 4 - 20), id: rng.int(0, 0xffff), ttl: rng.int(0, 255), proto: rng.int(0, 255),
      src: rng.u32(), dst: rng.u32(), tos: rng.int(0, 255), checksum: rng.int(0, 0xffff),
    });
    const want = refHeaderChecksum(p);
    if (ipv4HeaderChecksum(p, ihl * 4) !== want) {
      t.fail(`seed ${rng.seed} iteration ${i}: header checksum ${ipv4HeaderChecksum(p, ihl * 4)} != ${want}`);
      return;
    }
    ipv4SetHeaderChecksum(p);
    if (checksumField(p) !== want || validateIpv4(p, p.length) !== IPV4_OK) {
      t.fail(`seed ${rng.seed} iteration ${i}: ipv4SetHeaderChecksum`);
      return;
    }
  }
  t.pass('2000 random headers (IHL 5..15) match the reference checksum, ignoring the stored field');
});

t.test('decrementTtl matches a full recomputation on random headers', async (t) => {
  const rng = new Rng(0x1624);
  const ttls = [0, 1, 2, 255];
  let decremented = 0;
  let refused = 0;
  for (let i = 0; i < 5000; i++) {
    const ihl = rng.int(5, 15);
    const ttl = i % 2 === 0 ? rng.pick(ttls) : rng.int(0, 255);
    const p = buildIpv4({
      ihl, options: rng.bytes(ihl * 4 - 20), id: rng.int(0, 0xffff), ttl, proto: rng.int(0, 255),
      src: rng.u32(), dst: rng.u32(), tos: rng.int(0, 255), df: rng.int(0, 1) === 1,
      payload: rng.bytes(rng.int(0, 9)),
    });
    const before = Buffer.from(p);
    const ok = decrementTtl(p);
    const where = `seed ${rng.seed} iteration ${i} ttl ${ttl} ihl ${ihl}`;
    if (ttl <= 1) {
      if (ok || !p.equals(before)) { t.fail(`${where}: TTL <= 1 must return false and leave the packet untouched`); return; }
      refused++;
      continue;
    }
    if (!ok || p[8] !== ttl - 1) { t.fail(`${where}: not decremented`); return; }
    if (checksumField(p) !== refHeaderChecksum(p)) {
      t.fail(`${where}: incremental ${checksumField(p).toString(16)} != full ${refHeaderChecksum(p).toString(16)}`);
      return;
    }
    if (validateIpv4(p, p.length) !== IPV4_OK) { t.fail(`${where}: no longer valid`); return; }
    for (let j = 0; j < p.length; j++) {
      if (j !== 8 && j !== 10 && j !== 11 && p[j] !== before[j]) { t.fail(`${where}: byte ${j} changed`); return; }
    }
    decremented++;
  }
  t.ok(decremented > 3000, `decremented ${decremented}`);
  t.ok(refused > 500, `refused ${refused} with TTL 0 or 1`);
});

t.test('decrementTtl down to 1 keeps the checksum exact', async (t) => {
  const p = buildIpv4({ ttl: 255, src: 0x0a000001, dst: 0x0a000002, payload: Buffer.alloc(8) });
  let steps = 0;
  while (decrementTtl(p) && steps < 300) {
    steps++;
    if (checksumField(p) !== refHeaderChecksum(p)) { t.fail(`step ${steps}`); return; }
  }
  t.equal(steps, 254);
  t.equal(ipv4Ttl(p), 1);
  t.equal(decrementTtl(p), false);
  t.equal(ipv4Ttl(p), 1, 'TTL 1 stays 1');
  const zero = buildIpv4({ ttl: 0 });
  const copy = Buffer.from(zero);
  t.equal(decrementTtl(zero), false);
  t.same(zero, copy, 'TTL 0 untouched (no wrap to 255)');
});

t.test('decrementTtl RFC 1624 corner cases (0x0000 / 0xffff)', async (t) => {
  // Exhaustive over the id field for fixed other fields: every possible checksum value
  // (and so every ~HC) occurs, including the new sum being -0 (0xffff), where eqn. 2 of
  // RFC 1624 would give 0xffff instead of the recomputed 0x0000.
  for (const [ttl, proto] of [[2, 17], [255, 1], [64, 6]] as const) {
    let zeroAfter = 0;
    let mismatches = 0;
    for (let id = 0; id <= 0xffff; id++) {
      const p = buildIpv4({ id, ttl, proto, src: 0x0af40201, dst: 0x0af40302 });
      decrementTtl(p);
      const got = checksumField(p);
      if (got !== refHeaderChecksum(p)) mismatches++;
      if (got === 0) zeroAfter++;
      if (got === 0xffff) mismatches++; // never produce the non-canonical -0
    }
    t.equal(mismatches, 0, `ttl ${ttl} proto ${proto}: all 65536 ids match the full recomputation`);
    t.equal(zeroAfter, 1, `ttl ${ttl} proto ${proto}: exactly one id gives HC' = 0x0000`);
  }

  // Incoming checksum stored as 0xffff (the -0 encoding of a canonical 0x0000).
  let p: Buffer | undefined;
  for (let id = 0; id <= 0xffff && p === undefined; id++) {
    const q = buildIpv4({ id, ttl: 9 });
    if (checksumField(q) === 0) p = q;
  }
  if (p === undefined) throw new Error('no id gives checksum 0');
  const canonical = Buffer.from(p);
  p.writeUInt16BE(0xffff, 10);
  t.ok(decrementTtl(p));
  t.ok(decrementTtl(canonical));
  t.equal(checksumField(p), refHeaderChecksum(p), 'HC = 0xffff in: result equals full recompute');
  t.equal(checksumField(canonical), refHeaderChecksum(canonical), 'HC = 0x0000 in: result equals full recompute');
  t.equal(validateIpv4(p, 20), IPV4_OK);
});
