/**
 * The native engine's IPv6 route side in JS, without root: the mirror behind
 * upsert6/remove6/routes6 (validation, last-wins, removal, copies), the refusal without
 * `ipv6` options, and the exact Uint32Array layout EnginePort.setRoutes6 takes (checked
 * against words computed here from the address text, independently of ip6ToWords).
 * The C side of the same boundary runs in native/test (test_route6, test_engine6).
 */
import t from 'tap';
import { ip6ToWords, ROUTE6_WORDS } from '../../src/dataplane/addon';
import type { EngineOptions } from '../../src/dataplane/engine';
import { NativeEngine, encodeRoutes6 } from '../../src/dataplane/native-engine';
import type { Route6 } from '../../src/dataplane/types';
import { parseIp } from '../../src/net/addr';
import { parseIp6, parsePrefix6, type Prefix6 } from '../../src/net/addr6';
import { memoryLogger } from '../helpers/etcd';

function ip6(s: string): bigint {
  const a = parseIp6(s);
  if (a === undefined) throw new Error(`bad test address ${s}`);
  return a;
}
function pfx6(s: string): Prefix6 {
  const p = parsePrefix6(s);
  if (p === undefined) throw new Error(`bad test prefix ${s}`);
  return p;
}
function ip(s: string): number {
  const a = parseIp(s);
  if (a === undefined) throw new Error(`bad test address ${s}`);
  return a;
}

/** The 4 words of a fully written-out address "hhhh:hhhh:...": pairs of hextets. */
function wordsOfText(full: string): number[] {
  const h = full.split(':').map((x) => parseInt(x, 16));
  return [0, 1, 2, 3].map((i) => ((h[2 * i] as number) * 0x10000 + (h[2 * i + 1] as number)) >>> 0);
}

function options(ipv6: boolean): EngineOptions {
  return {
    tunName: 'ovl-unit0', tunAddress: ip('10.244.1.0'), tunMtu: 1472,
    network: { network: { addr: ip('10.244.0.0'), len: 16 }, port: 8285 },
    lease: { subnet: { addr: ip('10.244.1.0'), len: 24 }, publicIp: ip('192.0.2.1') },
    logger: memoryLogger().logger,
    ...(ipv6 ? { ipv6: { network: pfx6('fd00:10:244::/56'), subnet: pfx6('fd00:10:244:1::/64'), tunAddress: ip6('fd00:10:244:1::') } } : {}),
  };
}

t.test('ip6ToWords: big-endian 32-bit chunks of the address', async (t) => {
  t.same([...ip6ToWords(ip6('fd00:10:244:3::9'))], wordsOfText('fd00:0010:0244:0003:0000:0000:0000:0009'));
  t.same([...ip6ToWords(ip6('2001:db8:ffff:ffff:ffff:ffff:ffff:fffe'))], wordsOfText('2001:0db8:ffff:ffff:ffff:ffff:ffff:fffe'));
  t.same([...ip6ToWords(0n)], [0, 0, 0, 0]);
});

t.test('encodeRoutes6: 11 words per route, peer6 only with publicIpv6', async (t) => {
  const routes: Route6[] = [
    { subnet: pfx6('fd00:10:244:2::/64'), publicIp: ip('192.0.2.2'), publicIpv6: ip6('2001:db8::2') },
    { subnet: pfx6('fd00:10:244:4::/64'), publicIp: ip('192.0.2.4') },
  ];
  const w = encodeRoutes6(routes);
  t.equal(ROUTE6_WORDS, 11);
  t.equal(w.length, 22);
  t.same([...w.subarray(0, 11)], [...wordsOfText('fd00:0010:0244:0002:0000:0000:0000:0000'), 64, 0xc0000202, 1, ...wordsOfText('2001:0db8:0000:0000:0000:0000:0000:0002')]);
  t.same([...w.subarray(11, 22)], [...wordsOfText('fd00:0010:0244:0004:0000:0000:0000:0000'), 64, 0xc0000204, 0, 0, 0, 0, 0]);
  t.equal(encodeRoutes6([]).length, 0);
});

t.test('upsert6/remove6/routes6: the mirror (before open: nothing crosses into C)', async (t) => {
  const e = new NativeEngine(options(true));
  t.same(e.routes6(), []);
  e.upsert6({ subnet: pfx6('fd00:10:244:2::/64'), publicIp: ip('192.0.2.2'), publicIpv6: ip6('2001:db8::2') });
  e.upsert6({ subnet: pfx6('fd00:10:244:4::/64'), publicIp: ip('192.0.2.4') });
  e.upsert6({ subnet: pfx6('fd00:10:244:2::/64'), publicIp: ip('192.0.2.22') }); // the same subnet: last wins
  const byKey = new Map(e.routes6().map((r) => [`${r.subnet.addr}/${r.subnet.len}`, r]));
  t.equal(byKey.size, 2);
  const a = byKey.get(`${ip6('fd00:10:244:2::')}/64`);
  t.equal(a?.publicIp, ip('192.0.2.22'));
  t.equal(a?.publicIpv6, undefined, 'the replacement has no IPv6 underlay address');
  t.ok(Object.isFrozen(a), 'routes6() hands out frozen copies');
  e.remove6(pfx6('fd00:10:244:2::/64'));
  e.remove6(pfx6('fd00:10:244:9::/64')); // absent: nothing happens
  t.same(e.routes6().map((r) => r.publicIp), [ip('192.0.2.4')]);
  t.same(e.routes(), [], 'the IPv4 set is separate');
});

t.test('upsert6 refuses invalid routes and engines without ipv6', async (t) => {
  const e = new NativeEngine(options(true));
  t.throws(() => e.upsert6({ subnet: { addr: ip6('fd00:10:244:2::1'), len: 64 }, publicIp: 1 }), RangeError, 'host bits set');
  t.throws(() => e.upsert6({ subnet: { addr: 0n, len: 129 }, publicIp: 1 }), RangeError, 'len 129');
  t.throws(() => e.upsert6({ subnet: pfx6('fd00::/64'), publicIp: -1 }), RangeError, 'publicIp not a uint32');
  t.throws(() => e.upsert6({ subnet: pfx6('fd00::/64'), publicIp: 1, publicIpv6: 1n << 128n }), RangeError, 'publicIpv6 out of range');
  t.same(e.routes6(), [], 'nothing stored');
  const v4only = new NativeEngine(options(false));
  t.throws(() => v4only.upsert6({ subnet: pfx6('fd00::/64'), publicIp: 1 }), /without ipv6/);
});
