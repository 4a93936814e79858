import t from 'tap';
import { DEFAULT_ROUTE_CACHE_SIZE } from '../../src/dataplane/route-table';
import { RouteTable6 } from '../../src/dataplane/route-table6';
import type { Route6 } from '../../src/dataplane/types';
import { MAX_IP6, formatIp6, formatPrefix6, maskOf6, parseIp6, parsePrefix6, type Prefix6 } from '../../src/net/addr6';
import { Rng } from '../helpers/packets';

function ip6(s: string): bigint {
  const v = parseIp6(s);
  if (v === undefined) throw new Error(`bad test address ${s}`);
  return v;
}
function pfx(s: string): Prefix6 {
  const p = parsePrefix6(s);
  if (p === undefined) throw new Error(`bad test prefix ${s}`);
  return p;
}
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
  const dst = ip6('fd00:10:244:3::7');
  const expect = ['fd00:10:244:3::/64 via 64/2001:db8::64', 'fd00:10:244::/48 via 48', 'fd00::/8 via 8/2001:db8::8', '::/0 via 100', 'none'];
  for (const [i, s] of ['fd00:10:244:3::7/128', 'fd00:10:244:3::/64', 'fd00:10:244::/48', 'fd00::/8', '::/0'].entries()) {
    t.equal(rt.remove(pfx(s)), true, `remove ${s}`);
    t.equal(show(rt.lookup(dst)), expect[i], `after removing ${s}`);
  }
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
  const rng = new Rng(0x6b3e);
  let checks = 0;
  let hits = 0;
  const rand128 = (): bigint => (BigInt(rng.u32()) << 96n) | (BigInt(rng.u32()) << 64n) | (BigInt(rng.u32()) << 32n) | BigInt(rng.u32());
  for (let table = 0; table < 40; table++) {
    const cacheSize = rng.pick([0, 1, 8, DEFAULT_ROUTE_CACHE_SIZE]);
    const rt = new RouteTable6({ cacheSize });
    const ref = new Map<string, Route6>();
    const bases = [rand128(), rand128(), ip6('fd00:10:244::')];
    const randAddr = (): bigint => rng.pick(bases) ^ (rand128() >> BigInt(rng.int(0, 127)));
    const randPrefix = (): Prefix6 => {
      const len = rng.pick([0, 48, 56, 64, 128, rng.int(0, 128), rng.int(40, 80)]);
      return { addr: randAddr() & maskOf6(len), len };
    };
    const probes: bigint[] = [];
    for (let i = 0; i < 30; i++) probes.push(randAddr());
    const steps = rng.int(10, 60);
    for (let step = 0; step < steps; step++) {
      const op = rng.int(0, 9);
      if (op < 6 || ref.size === 0) {
        const p6 = rng.int(0, 1) === 0 ? undefined : BigInt(rng.int(1, 4));
        const r: Route6 = p6 === undefined ? { subnet: randPrefix(), publicIp: rng.int(1, 6) } : { subnet: randPrefix(), publicIp: rng.int(1, 6), publicIpv6: p6 };
        rt.upsert(r);
        ref.set(formatPrefix6(r.subnet), r);
      } else {
        const k = rng.pick([...ref.keys()]);
        if (!rt.remove(ref.get(k)!.subnet)) { t.fail(`remove of existing ${k} returned false`); return; }
        ref.delete(k);
      }
      const refRoutes = [...ref.values()];
      for (let pass = 0; pass < 2; pass++) {
        for (const dst of probes) {
          const got = rt.lookup(dst);
          const want = bruteForce(refRoutes, dst);
          checks++;
          if (want !== undefined) hits++;
          if (show(got) !== show(want)) {
            t.fail(`seed ${rng.seed} table ${table} step ${step} cache ${cacheSize}: ${formatIp6(dst)} -> ${show(got)}, want ${show(want)}`);
            return;
          }
        }
      }
      if (rt.size !== ref.size) { t.fail(`size ${rt.size} != ${ref.size}`); return; }
    }
    for (let peer = 1; peer <= 6; peer++) {
      const want4 = [...ref.values()].some((r) => r.publicIp === peer);
      const want6 = [...ref.values()].some((r) => r.publicIpv6 === BigInt(peer));
      if (rt.isKnownPeer4(peer) !== want4 || rt.isKnownPeer6(BigInt(peer)) !== want6) { t.fail(`table ${table}: peer ${peer} known-ness wrong`); return; }
    }
  }
  t.ok(hits > checks / 4 && hits < checks, `${checks} lookups agree with the reference (${hits} routed)`);
});
