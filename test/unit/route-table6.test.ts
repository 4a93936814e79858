import t from 'tap';
import { RouteTable6 } from '../../src/dataplane/route-table6';
import type { Route6 } from '../../src/dataplane/types';
import { MAX_IP6, formatIp6, formatPrefix6, maskOf6, parseIp6, parsePrefix6, type Prefix6 } from '../../src/net/addr6';
import { checkPeelOff, checkRandomTables, mustParse } from '../helpers/route-table-ref';

const ip6 = mustParse(parseIp6, 'address');
const pfx = mustParse(parsePrefix6, 'prefix');
function route(subnet: string, peer: number, peer6?: string): Route6 {
  return peer6 === undefined ? { subnet: pfx(subnet), publicIp: peer } : { subnet: pfx(subnet), publicIp: peer, publicIpv6: ip6(peer6) };
}
function show(r: Route6 | undefined): string {
  return r === undefined ? 'none' : `${formatPrefix6(r.subnet)} via ${r.publicIp}${r.publicIpv6 === undefined ? '' : `/${formatIp6(r.publicIpv6)}`}`;
}
/** Brute-force reference: scan every route, keep the longest containing dst (mask computed bit by bit). */
function bruteForce(routes: readonly Route6[], dst: bigint): Route6 | undefined {
  let best: Route6 | undefined;
  for (const r of routes) {
    let inside = true;
    for (let bit = 0; bit < r.subnet.len && inside; bit++) {
      const shift = BigInt(127 - bit);
      if (((dst >> shift) & 1n) !== ((r.subnet.addr >> shift) & 1n)) inside = false;
    }
    if (inside && (best === undefined || r.subnet.len > best.subnet.len)) best = r;
  }
  return best;
}

t.test('longest-prefix match with overlapping prefixes', async (t) => {
  const rt = new RouteTable6();
  rt.upsert(route('::/0', 100));
  rt.upsert(route('fd00::/8', 8, '2001:db8::8'));
  rt.upsert(route('fd00:10:244::/48', 48));
  rt.upsert(route('fd00:10:244:3::/64', 64, '2001:db8::64'));
  rt.upsert(route('fd00:10:244:3::7/128', 128));
  t.equal(rt.size, 5);
  t.equal(show(rt.lookup(ip6('fd00:10:244:3::7'))), 'fd00:10:244:3::7/128 via 128');
  t.equal(show(rt.lookup(ip6('fd00:10:244:3::8'))), 'fd00:10:244:3::/64 via 64/2001:db8::64');
  t.equal(show(rt.lookup(ip6('fd00:10:244:4::8'))), 'fd00:10:244::/48 via 48');
  t.equal(show(rt.lookup(ip6('fd00:10:245::1'))), 'fd00::/8 via 8/2001:db8::8');
  t.equal(show(rt.lookup(ip6('2001:db8::1'))), '::/0 via 100');
  t.equal(show(rt.lookup(MAX_IP6)), '::/0 via 100');
  t.equal(rt.isKnownPeer4(64), true);
  t.equal(rt.isKnownPeer6(ip6('2001:db8::64')), true);
  t.equal(rt.isKnownPeer6(ip6('2001:db8::65')), false);
  checkPeelOff(t, rt, ip6('fd00:10:244:3::7'), pfx, show, [
    ['fd00:10:244:3::7/128', 'fd00:10:244:3::/64 via 64/2001:db8::64'], ['fd00:10:244:3::/64', 'fd00:10:244::/48 via 48'],
    ['fd00:10:244::/48', 'fd00::/8 via 8/2001:db8::8'], ['fd00::/8', '::/0 via 100'], ['::/0', 'none'],
  ]);
  t.equal(rt.size, 0);
  t.equal(rt.isKnownPeer6(ip6('2001:db8::64')), false, 'peer forgotten with its route');
  t.equal(rt.remove(pfx('fd00::/8')), false);
});

t.test('re-pointing a route changes peers and clears the cache', async (t) => {
  const rt = new RouteTable6();
  const dst = ip6('fd00:10:244:5::9');
  rt.upsert(route('fd00:10:244:5::/64', 1));
  t.equal(show(rt.lookup(dst)), 'fd00:10:244:5::/64 via 1');
  t.equal(rt.cacheEntries().positive, 1);
  rt.upsert(route('fd00:10:244:5::/64', 2, '2001:db8::2'));
  t.equal(show(rt.lookup(dst)), 'fd00:10:244:5::/64 via 2/2001:db8::2', 'new peer seen');
  t.equal(rt.isKnownPeer4(1), false);
  t.equal(rt.isKnownPeer4(2), true);
  t.equal(rt.isKnownPeer6(ip6('2001:db8::2')), true);
  rt.upsert(route('fd00:10:244:5::/64', 2));
  t.equal(rt.isKnownPeer6(ip6('2001:db8::2')), false, 'IPv6 underlay dropped from the route');
  t.equal(rt.lookup(ip6('fd00:10:244:6::1')), undefined);
  t.equal(rt.cacheEntries().negative, 1);
  rt.upsert(route('fd00:10:244:6::/64', 3));
  t.equal(show(rt.lookup(ip6('fd00:10:244:6::1'))), 'fd00:10:244:6::/64 via 3', 'negative entry cleared');
  t.same(rt.routes().map(show), ['fd00:10:244:5::/64 via 2', 'fd00:10:244:6::/64 via 3']);
  t.ok(Object.isFrozen(rt.routes()[0]));
  rt.clear();
  t.equal(rt.size, 0);
  t.equal(rt.lookup(dst), undefined);
});

t.test('invalid routes are refused', async (t) => {
  const rt = new RouteTable6();
  t.throws(() => rt.upsert({ subnet: { addr: 1n, len: 64 }, publicIp: 1 }), RangeError, 'host bits');
  t.throws(() => rt.upsert({ subnet: { addr: 0n, len: 129 }, publicIp: 1 }), RangeError, 'len 129');
  t.throws(() => rt.upsert({ subnet: { addr: MAX_IP6 + 1n, len: 128 }, publicIp: 1 }), RangeError, 'beyond 128 bits');
  t.throws(() => rt.upsert({ subnet: pfx('fd00::/64'), publicIp: -1 }), RangeError, 'publicIp');
  t.throws(() => rt.upsert({ subnet: pfx('fd00::/64'), publicIp: 1, publicIpv6: -1n }), RangeError, 'publicIpv6');
  t.throws(() => new RouteTable6({ cacheSize: -1 }), RangeError);
  t.equal(rt.size, 0);
});

t.test('random tables against a brute-force reference', async (t) => {
  checkRandomTables(t, {
    seed: 0x6b3e, tables: 40, probes: 30, minSteps: 10, maxSteps: 60,
    make: (cacheSize) => new RouteTable6({ cacheSize }),
    family: (rng) => {
      const rand128 = (): bigint => (BigInt(rng.u32()) << 96n) | (BigInt(rng.u32()) << 64n) | (BigInt(rng.u32()) << 32n) | BigInt(rng.u32());
      const bases = [rand128(), rand128(), ip6('fd00:10:244::')];
      const addr = (): bigint => rng.pick(bases) ^ (rand128() >> BigInt(rng.int(0, 127)));
      const prefix = (): Prefix6 => {
        const len = rng.pick([0, 48, 56, 64, 128, rng.int(0, 128), rng.int(40, 80)]);
        return { addr: addr() & maskOf6(len), len };
      };
      const route = (): Route6 => {
        const p6 = rng.int(0, 1) === 0 ? undefined : BigInt(rng.int(1, 4));
        return p6 === undefined ? { subnet: prefix(), publicIp: rng.int(1, 6) } : { subnet: prefix(), publicIp: rng.int(1, 6), publicIpv6: p6 };
      };
      return { addr, prefix, route };
    },
    bruteForce, show, formatPrefix: formatPrefix6, formatIp: formatIp6,
    peerMismatch: (rt, routes, peer) => {
      const want4 = routes.some((r) => r.publicIp === peer);
      const want6 = routes.some((r) => r.publicIpv6 === BigInt(peer));
      return rt.isKnownPeer4(peer) === want4 && rt.isKnownPeer6(BigInt(peer)) === want6 ? undefined : `peer ${peer} known-ness wrong`;
    },
  });
});
