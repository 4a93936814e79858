/** src/net/addr6.ts: IPv6 text as Go's net.IP prints it (RFC 5952), parsing edge cases, prefixes, bytes. */
import t from 'tap';
import {
  formatIp6, formatPrefix6, ip6FromBytes, ip6ToBytes, isIp6, MAX_IP6, maskOf6, parseIp6, parsePrefix6, prefix6Contains, prefix6Covers,
  prefix6Equals, prefix6Key,
} from '../../src/net/addr6';

const A = (s: string): bigint => {
  const a = parseIp6(s);
  if (a === undefined) throw new Error(s);
  return a;
};

t.test('formatting: what Go\'s net.IP.String() prints (RFC 5952)', async (t) => {
  // [input, Go's output] (checked against Go 1.22 net.ParseIP(x).String())
  const cases: Array<[string, string]> = [
    ['0:0:0:0:0:0:0:0', '::'],
    ['0:0:0:0:0:0:0:1', '::1'],
    ['1:0:0:0:0:0:0:0', '1::'],
    ['2001:0db8:0000:0000:0000:0000:0000:0001', '2001:db8::1'],
    ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // equal runs: the leftmost is compressed
    ['0:0:1:0:0:1:0:0', '::1:0:0:1:0:0'],
    ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'], // the longest run wins
    ['1:0:0:2:0:0:0:3', '1:0:0:2::3'],
    ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed
    ['1:2:3:4:5:6:7::', '1:2:3:4:5:6:7:0'],
    ['0:1:0:0:0:0:0:0', '0:1::'],
    ['FD00:10:244:3:0:0:0:0', 'fd00:10:244:3::'], // lower case
    ['fd00:0:0:3::', 'fd00:0:0:3::'],
    ['::1.2.3.4', '::102:304'], // IPv4-compatible: hex in Go
    ['ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff', 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'],
  ];
  for (const [input, go] of cases) t.equal(formatIp6(A(input)), go, input);
  t.equal(formatIp6(A('::ffff:1.2.3.4')), '::ffff:1.2.3.4', 'IPv4-mapped: kept recognisable (Go prints only 1.2.3.4; never in a key)');
  t.equal(formatIp6(0n), '::');
  t.equal(formatIp6(MAX_IP6), 'ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff');
});

t.test('parsing: values, and every malformed form refused', async (t) => {
  t.equal(A('::'), 0n);
  t.equal(A('::1'), 1n);
  t.equal(A('fd00::'), 0xfd00n << 112n);
  t.equal(A('::ffff:10.0.0.1'), (0xffffn << 32n) | 0x0a000001n);
  t.equal(A('1:2:3:4:5:6:7:8'), 0x0001_0002_0003_0004_0005_0006_0007_0008n);
  t.equal(A('1:2:3:4:5:6:7::'), 0x0001_0002_0003_0004_0005_0006_0007_0000n, ':: standing for one group');
  t.equal(A('::2:3:4:5:6:7:8'), 0x0000_0002_0003_0004_0005_0006_0007_0008n);
  for (const bad of [
    '', ':', ':::', '1:2:3:4:5:6:7', '1:2:3:4:5:6:7:8:9', '1::2::3', '12345::', '::12345', ':1::', '1::2:', ':1:2:3:4:5:6:7:8',
    '1:2:3:4:5:6:7:8::', '::1.2.3', '::256.1.1.1', '::01.2.3.4', '::1.2.3.4:5', '1.2.3.4', 'fe80::1%eth0', 'g::', ' ::1', '::1 ',
    '[::1]', '::/64', '0x1::',
  ]) {
    t.equal(parseIp6(bad), undefined, JSON.stringify(bad));
    t.notOk(isIp6(bad));
  }
  t.ok(isIp6('2001:db8::1'));
  // round trip of canonical text
  for (const s of ['2001:db8::1', 'fd00:10:244:3::', '::', 'fe80::1:2', '1:2:3:4:5:6:7:8']) t.equal(formatIp6(A(s)), s);
});

t.test('prefixes: strict and masked parsing, text, containment', async (t) => {
  t.same(parsePrefix6('fd00:10:244::/56'), { addr: A('fd00:10:244::'), len: 56 });
  t.equal(parsePrefix6('fd00:10:244::1/56'), undefined, 'host bits set: refused when strict');
  t.same(parsePrefix6('fd00:10:244::1/56', false), { addr: A('fd00:10:244::'), len: 56 }, 'masked when not strict');
  t.same(parsePrefix6('::/0'), { addr: 0n, len: 0 });
  t.same(parsePrefix6('::1/128'), { addr: 1n, len: 128 });
  for (const bad of ['fd00::', 'fd00::/129', 'fd00::/-1', 'fd00::/064', 'fd00::/ 64', 'fd00::/', '/64', '10.0.0.0/8', 'fd00::/64/1']) {
    t.equal(parsePrefix6(bad, false), undefined, bad);
  }
  t.equal(formatPrefix6({ addr: A('fd00:0:0:3::'), len: 64 }), 'fd00:0:0:3::/64');
  t.equal(prefix6Key({ addr: A('fd00::'), len: 48 }), 'fd00::/48');
  t.equal(maskOf6(0), 0n);
  t.equal(maskOf6(128), MAX_IP6);
  t.equal(maskOf6(64), MAX_IP6 ^ ((1n << 64n) - 1n));
  t.equal(maskOf6(1), 1n << 127n);
  const net = { addr: A('fd00:10:244::'), len: 56 };
  t.ok(prefix6Contains(net, A('fd00:10:244:ff::1')));
  t.notOk(prefix6Contains(net, A('fd00:10:245::')));
  t.ok(prefix6Covers(net, { addr: A('fd00:10:244:3::'), len: 64 }));
  t.notOk(prefix6Covers(net, { addr: A('fd00:10::'), len: 48 }), 'a shorter prefix is not covered');
  t.notOk(prefix6Covers(net, { addr: A('fd00:10:245::'), len: 64 }));
  t.ok(prefix6Equals(net, { addr: A('fd00:10:244::'), len: 56 }));
  t.notOk(prefix6Equals(net, { addr: A('fd00:10:244::'), len: 57 }));
});

t.test('bytes: network order, round trip', async (t) => {
  const a = A('2001:db8::102:304');
  const b = ip6ToBytes(a);
  t.equal(b.toString('hex'), '20010db8000000000000000001020304');
  t.equal(ip6FromBytes(b), a);
  const padded = Buffer.concat([Buffer.from([9, 9, 9]), b]);
  t.equal(ip6FromBytes(padded, 3), a, 'at an offset');
  t.equal(ip6ToBytes(MAX_IP6).toString('hex'), 'f'.repeat(32));
  t.equal(ip6FromBytes(Buffer.alloc(16)), 0n);
});
