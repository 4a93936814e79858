import t from 'tap';
import { BlockList, isIPv4 } from 'node:net';
import {
  formatIp, formatPrefix, isIp, maskOf, parseIp, parsePrefix, prefixContains, prefixCovers, prefixEquals, prefixKey,
  prefixSize, type Prefix,
} from '../../src/net/addr';
import { Rng } from '../helpers/packets';

t.test('parseIp known values', async (t) => {
  t.equal(parseIp('0.0.0.0'), 0);
  t.equal(parseIp('10.0.0.1'), 0x0a000001);
  t.equal(parseIp('10.244.3.0'), 0x0af40300);
  t.equal(parseIp('192.0.2.7'), 0xc0000207, 'top bit set: positive uint32');
  t.equal(parseIp('255.255.255.255'), 0xffffffff);
  t.equal(parseIp('1.2.3.4'), 0x01020304);
  t.equal(isIp('1.2.3.4'), true);
  t.equal(isIp('1.2.3'), false);
});

t.test('parseIp rejects malformed input', async (t) => {
  const bad = [
    '', '1', '1.2', '1.2.3', '1.2.3.4.5', '256.0.0.1', '1.2.3.256', '999.1.1.1', '1.2.3.-1', '-1.2.3.4', '+1.2.3.4',
    '1..2.3', '.1.2.3', '1.2.3.', ' 1.2.3.4', '1.2.3.4 ', '1.2.3.4\n', '1. 2.3.4', '0x1.2.3.4', '1.2.3.0x4', '1e2.1.1.1',
    'a.b.c.d', '1.2.3.4/32', '::1', '::ffff:1.2.3.4', '١.٢.٣.٤',
    // Leading zeros are rejected: inet_aton(3) reads "010" as octal 8, other parsers as
    // decimal 10, so the string is ambiguous (Go >= 1.17 and node:net reject it too).
    '010.1.1.1', '1.01.1.1', '1.1.1.00', '00.0.0.0', '1.2.3.0255',
  ];
  for (const s of bad) t.equal(parseIp(s), undefined, JSON.stringify(s));
});

t.test('parseIp agrees with node:net isIPv4 on random strings', async (t) => {
  const rng = new Rng(0xad0);
  const alphabet = '0123456789..........';
  let accepted = 0;
  for (let i = 0; i < 20000; i++) {
    let s = '';
    const n = rng.int(1, 15);
    for (let j = 0; j < n; j++) s += alphabet[rng.int(0, alphabet.length - 1)];
    // also splice near-valid quads so that acceptance is exercised
    if (i % 3 === 0) s = `${rng.int(0, 300)}.${rng.int(0, 260)}.${rng.pick(['0', '00', '01', '10', '255', '256'])}.${rng.int(0, 255)}`;
    const ours = parseIp(s) !== undefined;
    if (ours) accepted++;
    if (ours !== isIPv4(s)) { t.fail(`seed ${rng.seed}: ${JSON.stringify(s)} ours ${ours}, node ${!ours}`); return; }
  }
  t.ok(accepted > 1000, `agreed on 20000 strings (${accepted} accepted)`);
});

t.test('formatIp/parseIp round trip', async (t) => {
  const rng = new Rng(0xf0f0);
  const edge = [0, 1, 0x7fffffff, 0x80000000, 0xfffffffe, 0xffffffff];
  for (let i = 0; i < 5000 + edge.length; i++) {
    const n = i < edge.length ? edge[i]! : rng.u32();
    const s = formatIp(n);
    if (parseIp(s) !== n) { t.fail(`${n} -> ${s} -> ${parseIp(s)}`); return; }
  }
  t.pass('5006 addresses round-trip');
  t.equal(formatIp(0xc0a80001), '192.168.0.1');
  t.equal(formatIp(0xc0a80001 | 0), '192.168.0.1', 'a signed int32 formats as its uint32 value');
});

t.test('maskOf', async (t) => {
  t.equal(maskOf(0), 0);
  t.equal(maskOf(1), 0x80000000);
  t.equal(maskOf(8), 0xff000000);
  t.equal(maskOf(24), 0xffffff00);
  t.equal(maskOf(31), 0xfffffffe);
  t.equal(maskOf(32), 0xffffffff);
  for (let len = 0; len <= 32; len++) {
    const m = maskOf(len);
    // popcount = len, contiguous from the top, non-negative
    let bits = 0;
    for (let i = 0; i < 32; i++) if ((m >>> i) & 1) bits++;
    if (m < 0 || bits !== len || ((m | (2 ** (32 - len) - 1)) >>> 0) !== 0xffffffff) { t.fail(`maskOf(${len}) = ${m}`); return; }
  }
  t.pass('0..32 contiguous and non-negative');
});

t.test('parsePrefix', async (t) => {
  t.same(parsePrefix('10.244.0.0/16'), { addr: 0x0af40000, len: 16 });
  t.same(parsePrefix('0.0.0.0/0'), { addr: 0, len: 0 });
  t.same(parsePrefix('255.255.255.255/32'), { addr: 0xffffffff, len: 32 });
  t.same(parsePrefix('10.244.3.0/24'), { addr: 0x0af40300, len: 24 });

  // host bits set: rejected under strict (the default), masked otherwise
  t.equal(parsePrefix('10.244.3.1/24'), undefined, 'strict: host bits');
  t.equal(parsePrefix('10.244.3.1/24', true), undefined);
  t.same(parsePrefix('10.244.3.1/24', false), { addr: 0x0af40300, len: 24 }, 'non-strict masks');
  t.equal(parsePrefix('1.0.0.0/0'), undefined, 'strict /0 needs 0.0.0.0');
  t.same(parsePrefix('1.2.3.4/0', false), { addr: 0, len: 0 });
  t.same(parsePrefix('1.2.3.4/32'), { addr: 0x01020304, len: 32 }, '/32 has no host bits');

  const bad = [
    '1.2.3.4/33', '1.2.3.4/99', '1.2.3.4/', '1.2.3.4', '1.2.3/8', '256.0.0.0/8', '1.2.3.4/-1', '1.2.3.4/+8',
    '1.2.3.4/08', '1.2.3.4/8/8', '1.2.3.4/ 8', '1.2.3.4 /8', '/8', '1.2.3.4/8 ', '1.2.3.4/0x8', '1.2.3.4/8.0',
    '010.0.0.0/8', '',
  ];
  for (const s of bad) {
    t.equal(parsePrefix(s), undefined, `strict ${JSON.stringify(s)}`);
    t.equal(parsePrefix(s, false), undefined, `non-strict ${JSON.stringify(s)}`);
  }
});

t.test('formatPrefix/parsePrefix round trip and prefixKey', async (t) => {
  const rng = new Rng(0x9f);
  for (let i = 0; i < 3000; i++) {
    const len = rng.int(0, 32);
    const p: Prefix = { addr: (rng.u32() & maskOf(len)) >>> 0, len };
    const s = formatPrefix(p);
    const back = parsePrefix(s);
    if (back === undefined || !prefixEquals(back, p) || prefixKey(p) !== s) { t.fail(`${s}`); return; }
  }
  t.pass('3000 prefixes round-trip');
  t.equal(formatPrefix({ addr: 0x0af40300, len: 24 }), '10.244.3.0/24');
  t.equal(prefixKey({ addr: 0x0af40300, len: 24 }), '10.244.3.0/24');
});

t.test('prefixContains agrees with node:net BlockList', async (t) => {
  const rng = new Rng(0xb10c);
  for (let i = 0; i < 400; i++) {
    const len = rng.pick([0, 1, 8, 16, 24, 31, 32, rng.int(0, 32)]);
    const p: Prefix = { addr: (rng.u32() & maskOf(len)) >>> 0, len };
    const bl = new BlockList();
    bl.addSubnet(formatIp(p.addr), len, 'ipv4');
    for (let j = 0; j < 20; j++) {
      // half near the prefix (flip a few low bits), half anywhere
      const ipn = j % 2 === 0 ? (p.addr ^ (rng.u32() >>> rng.int(len === 0 ? 0 : len - 1, 31))) >>> 0 : rng.u32();
      if (prefixContains(p, ipn) !== bl.check(formatIp(ipn), 'ipv4')) {
        t.fail(`seed ${rng.seed}: ${formatPrefix(p)} contains ${formatIp(ipn)}?`);
        return;
      }
    }
  }
  t.pass('8000 containment checks agree');
  const p = { addr: 0x0af40300, len: 24 };
  t.equal(prefixContains(p, 0x0af40300), true, 'network address');
  t.equal(prefixContains(p, 0x0af403ff), true, 'last address');
  t.equal(prefixContains(p, 0x0af40400), false, 'next subnet');
  t.equal(prefixContains(p, 0x0af402ff), false, 'previous subnet');
  t.equal(prefixContains({ addr: 0, len: 0 }, 0xffffffff), true, '/0 contains everything');
  t.equal(prefixContains({ addr: 0xc0000000, len: 2 }, 0xc0a80001 | 0), true, 'signed int32 address');
});

t.test('prefixCovers, prefixEquals, prefixSize', async (t) => {
  const P = (s: string): Prefix => {
    const p = parsePrefix(s);
    if (p === undefined) throw new Error(s);
    return p;
  };
  t.equal(prefixCovers(P('10.244.0.0/16'), P('10.244.3.0/24')), true);
  t.equal(prefixCovers(P('10.244.0.0/16'), P('10.244.0.0/16')), true, 'equal covers');
  t.equal(prefixCovers(P('10.244.3.0/24'), P('10.244.0.0/16')), false, 'inner wider than outer');
  t.equal(prefixCovers(P('10.244.0.0/16'), P('10.245.0.0/24')), false, 'disjoint');
  t.equal(prefixCovers(P('10.244.0.0/16'), P('10.0.0.0/8')), false, 'supernet');
  t.equal(prefixCovers(P('0.0.0.0/0'), P('255.255.255.255/32')), true);
  t.equal(prefixCovers(P('10.244.3.7/32'), P('10.244.3.7/32')), true);
  t.equal(prefixCovers(P('10.244.3.7/32'), P('10.244.3.6/32')), false);
  t.equal(prefixCovers(P('10.244.3.0/24'), P('10.244.3.128/25')), true, 'upper half');

  t.equal(prefixEquals(P('10.0.0.0/8'), P('10.0.0.0/8')), true);
  t.equal(prefixEquals(P('10.0.0.0/8'), P('10.0.0.0/9')), false);
  t.equal(prefixEquals(P('10.0.0.0/8'), P('11.0.0.0/8')), false);

  t.equal(prefixSize(P('0.0.0.0/0')), 2 ** 32);
  t.equal(prefixSize(P('10.0.0.0/8')), 2 ** 24);
  t.equal(prefixSize(P('10.244.3.0/24')), 256);
  t.equal(prefixSize(P('10.244.3.7/32')), 1);
});
