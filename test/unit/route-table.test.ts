import t from 'tap';
import { RouteTable } from '../../src/dataplane/route-table';
import type { Route } from '../../src/dataplane/types';
import { formatIp, formatPrefix, maskOf, parseIp, parsePrefix, type Prefix } from '../../src/net/addr';
import { checkPeelOff, checkRandomTables, mustParse } from '../helpers/route-table-ref';

const ip = mustParse(parseIp, 'address');
const pfx = mustParse(parsePrefix, 'prefix');
function route(subnet: string, peer: string): Route {
  return { subnet: pfx(subnet), publicIp: ip(peer) };
}
/** "subnet via peer" of a lookup result, or "none" */
function show(r: Route | undefined): string {
  return r === undefined ? 'none' : `${formatPrefix(r.subnet)} via ${formatIp(r.publicIp)}`;
}

/** Brute-force reference: scan every route, keep the longest containing dst. */
function bruteForce(routes: readonly Route[], dst: number): Route | undefined {
  let best: Route | undefined;
  for (const r of routes) {
    if (((dst & maskOf(r.subnet.len)) >>> 0) === r.subnet.addr && (best === undefined || r.subnet.len > best.subnet.len)) best = r;
  }
  return best;
}

t.test('longest-prefix match with overlapping prefixes', async (t) => {
  const rt = new RouteTable();
  rt.upsert(route('0.0.0.0/0', '192.0.2.100'));
  rt.upsert(route('10.0.0.0/8', '192.0.2.8'));
  rt.upsert(route('10.1.0.0/16', '192.0.2.16'));
  rt.upsert(route('10.1.2.0/24', '192.0.2.24'));
  rt.upsert(route('10.1.2.3/32', '192.0.2.32'));
  t.equal(rt.size, 5);
  t.equal(show(rt.lookup(ip('10.1.2.3'))), '10.1.2.3/32 via 192.0.2.32');
  t.equal(show(rt.lookup(ip('10.1.2.4'))), '10.1.2.0/24 via 192.0.2.24');
  t.equal(show(rt.lookup(ip('10.1.3.3'))), '10.1.0.0/16 via 192.0.2.16');
  t.equal(show(rt.lookup(ip('10.2.2.3'))), '10.0.0.0/8 via 192.0.2.8');
  t.equal(show(rt.lookup(ip('11.1.2.3'))), '0.0.0.0/0 via 192.0.2.100');
  t.equal(show(rt.lookup(ip('255.255.255.255'))), '0.0.0.0/0 via 192.0.2.100');

  // peel off from the most specific: each lookup falls back one level (and the cache
  // entries from above must not survive)
  checkPeelOff(t, rt, ip('10.1.2.3'), pfx, show, [
    ['10.1.2.3/32', '10.1.2.0/24 via 192.0.2.24'], ['10.1.2.0/24', '10.1.0.0/16 via 192.0.2.16'],
    ['10.1.0.0/16', '10.0.0.0/8 via 192.0.2.8'], ['10.0.0.0/8', '0.0.0.0/0 via 192.0.2.100'], ['0.0.0.0/0', 'none'],
  ]);
  t.equal(rt.size, 0);
});

t.test('no default route: unknown destinations miss', async (t) => {
  const rt = new RouteTable();
  t.equal(rt.lookup(ip('10.0.0.1')), undefined, 'empty table');
  rt.upsert(route('10.244.1.0/24', '192.0.2.1'));
  t.equal(rt.lookup(ip('10.244.2.1')), undefined);
  t.equal(rt.lookup(ip('10.244.0.255')), undefined);
  t.equal(show(rt.lookup(ip('10.244.1.0'))), '10.244.1.0/24 via 192.0.2.1', 'network address');
  t.equal(show(rt.lookup(ip('10.244.1.255'))), '10.244.1.0/24 via 192.0.2.1', 'broadcast address');
  t.equal(show(rt.lookup(ip('10.244.1.9') | 0)), '10.244.1.0/24 via 192.0.2.1', 'signed int32 accepted');
  const hi = new RouteTable();
  hi.upsert(route('192.168.0.0/16', '192.0.2.2'));
  t.equal(show(hi.lookup(ip('192.168.3.4') | 0)), '192.168.0.0/16 via 192.0.2.2', 'top-bit address as a negative int32');
  t.equal(show(hi.lookup(ip('192.168.3.4'))), '192.168.0.0/16 via 192.0.2.2', 'and as uint32');
  t.equal(hi.cacheEntries().positive, 1, 'both forms share one cache entry');
});

t.test('random tables against a brute-force reference', async (t) => {
  checkRandomTables(t, {
    seed: 0x1b3e, tables: 60, probes: 40, minSteps: 10, maxSteps: 80,
    make: (cacheSize) => new RouteTable({ cacheSize }),
    family: (rng) => {
      // addresses clustered under a few bases so prefixes overlap a lot
      const bases = [rng.u32(), rng.u32(), ip('10.244.0.0')];
      const addr = (): number => (rng.pick(bases) ^ (rng.u32() >>> rng.int(0, 31))) >>> 0;
      const prefix = (): Prefix => {
        const len = rng.pick([0, 8, 16, 24, 32, rng.int(0, 32), rng.int(12, 28)]);
        return { addr: (addr() & maskOf(len)) >>> 0, len };
      };
      return { addr, prefix, route: (): Route => ({ subnet: prefix(), publicIp: rng.int(1, 6) }) };
    },
    bruteForce, show, formatPrefix, formatIp,
    peerMismatch: (rt, routes, peer) => {
      const want = routes.some((r) => r.publicIp === peer);
      return rt.isKnownPeer(peer) === want ? undefined : `isKnownPeer(${peer}) ${!want}`;
    },
  });
});

t.test('cache invalidation', async (t) => {
  const rt = new RouteTable();
  const dst = ip('10.244.5.9');
  rt.upsert(route('10.244.5.0/24', '192.0.2.1'));
  t.equal(show(rt.lookup(dst)), '10.244.5.0/24 via 192.0.2.1');
  t.equal(show(rt.lookup(dst)), '10.244.5.0/24 via 192.0.2.1', 'served from the cache');
  t.equal(rt.cacheEntries().positive, 1, 'positive entry cached');

  rt.upsert(route('10.244.5.0/24', '192.0.2.2'));
  t.equal(show(rt.lookup(dst)), '10.244.5.0/24 via 192.0.2.2', 'change of peer seen by a cached destination');
  t.equal(rt.size, 1, 'change of peer does not add a route');

  rt.upsert(route('10.244.5.8/29', '192.0.2.3'));
  t.equal(show(rt.lookup(dst)), '10.244.5.8/29 via 192.0.2.3', 'a more specific route added after caching wins');
  t.equal(show(rt.lookup(ip('10.244.5.1'))), '10.244.5.0/24 via 192.0.2.2');

  t.equal(rt.remove(pfx('10.244.5.8/29')), true);
  t.equal(show(rt.lookup(dst)), '10.244.5.0/24 via 192.0.2.2', 'back to the /24 after removing the /29');
  t.equal(rt.remove(pfx('10.244.5.0/24')), true);
  t.equal(rt.lookup(dst), undefined, 'removed route not served from the cache');
  t.equal(rt.remove(pfx('10.244.5.0/24')), false, 'second remove');
});

t.test('negative caching', async (t) => {
  const rt = new RouteTable();
  rt.upsert(route('10.244.1.0/24', '192.0.2.1'));
  const dst = ip('10.244.7.7');
  t.equal(rt.lookup(dst), undefined);
  t.same(rt.cacheEntries(), { positive: 0, negative: 1 }, 'miss cached');
  t.equal(rt.lookup(dst), undefined, 'cached miss');
  t.same(rt.cacheEntries(), { positive: 0, negative: 1 }, 'served from the negative cache, not re-added');

  rt.upsert(route('10.244.0.0/16', '192.0.2.9'));
  t.same(rt.cacheEntries(), { positive: 0, negative: 0 }, 'change clears the negative cache');
  t.equal(show(rt.lookup(dst)), '10.244.0.0/16 via 192.0.2.9', 'covering route added after a cached miss is found');

  // unrelated route added: a cached miss is still re-evaluated (and still misses)
  const other = ip('172.16.0.1');
  t.equal(rt.lookup(other), undefined);
  rt.upsert(route('192.168.0.0/16', '192.0.2.5'));
  t.equal(rt.lookup(other), undefined);
  rt.upsert(route('0.0.0.0/0', '192.0.2.6'));
  t.equal(show(rt.lookup(other)), '0.0.0.0/0 via 192.0.2.6', 'default route added after a cached miss');
});

t.test('a flood of unknown destinations does not evict routed ones', async (t) => {
  const rt = new RouteTable({ cacheSize: 4 });
  rt.upsert(route('10.244.1.0/24', '192.0.2.1'));
  for (let i = 0; i < 4; i++) rt.lookup(ip(`10.244.1.${i + 1}`));
  t.same(rt.cacheEntries(), { positive: 4, negative: 0 });
  let misses = 0;
  for (let i = 0; i < 100; i++) if (rt.lookup(ip(`10.9.${i}.1`)) === undefined) misses++;
  t.equal(misses, 100);
  t.same(rt.cacheEntries(), { positive: 4, negative: 4 }, 'both caches bounded; positives kept');
  t.equal(show(rt.lookup(ip('10.244.1.1'))), '10.244.1.0/24 via 192.0.2.1');
});

t.test('cache disabled', async (t) => {
  const rt = new RouteTable({ cacheSize: 0 });
  rt.upsert(route('10.0.0.0/8', '192.0.2.1'));
  t.equal(show(rt.lookup(ip('10.1.1.1'))), '10.0.0.0/8 via 192.0.2.1');
  t.equal(rt.lookup(ip('11.1.1.1')), undefined);
  t.same(rt.cacheEntries(), { positive: 0, negative: 0 });
  t.throws(() => new RouteTable({ cacheSize: -1 }), RangeError);
  t.throws(() => new RouteTable({ cacheSize: 1.5 }), RangeError);
});

t.test('isKnownPeer refcounting', async (t) => {
  const rt = new RouteTable();
  const a = ip('192.0.2.1');
  const b = ip('192.0.2.2');
  t.equal(rt.isKnownPeer(a), false);
  rt.upsert(route('10.244.1.0/24', '192.0.2.1'));
  rt.upsert(route('10.244.2.0/24', '192.0.2.1'));
  t.equal(rt.isKnownPeer(a), true);
  t.equal(rt.peerCount, 1);
  t.equal(show(rt.lookup(ip('10.244.2.1'))), '10.244.2.0/24 via 192.0.2.1');
  rt.upsert(route('10.244.2.0/24', '192.0.2.1'));
  t.equal(rt.size, 2, 'identical re-upsert is a no-op');
  t.equal(rt.cacheEntries().positive, 1, 'identical re-upsert keeps the cache');
  t.equal(rt.remove(pfx('10.244.1.0/24')), true);
  t.equal(rt.isKnownPeer(a), true, 'one route left for a (re-upsert did not double count)');
  rt.upsert(route('10.244.2.0/24', '192.0.2.2'));
  t.equal(rt.isKnownPeer(a), false, 'a lost its last route by a change of peer');
  t.equal(rt.isKnownPeer(b), true);
  t.equal(rt.isKnownPeer(b | 0), true, 'signed int32 accepted');
  t.equal(rt.remove(pfx('10.244.2.0/24')), true);
  t.equal(rt.isKnownPeer(b), false);
  t.equal(rt.peerCount, 0);
  t.equal(rt.remove(pfx('10.244.2.0/24')), false, 'removing an absent route does not underflow');
  rt.upsert(route('10.244.3.0/24', '192.0.2.2'));
  t.equal(rt.isKnownPeer(b), true);
  rt.clear();
  t.equal(rt.isKnownPeer(b), false, 'clear forgets peers');
  t.equal(rt.size, 0);
  t.equal(rt.lookup(ip('10.244.3.1')), undefined, 'clear invalidates the cache');
});

t.test('routes() snapshot, get() and ownership', async (t) => {
  const rt = new RouteTable();
  for (const [s, p] of [['192.168.0.0/16', '192.0.2.3'], ['10.244.2.0/24', '192.0.2.2'], ['10.0.0.0/8', '192.0.2.8'],
    ['10.244.0.0/16', '192.0.2.9'], ['0.0.0.0/0', '192.0.2.1'], ['10.244.1.0/24', '192.0.2.1'], ['10.244.0.0/24', '192.0.2.4']] as const) {
    rt.upsert(route(s, p));
  }
  const snap = rt.routes();
  t.same(snap.map((r) => formatPrefix(r.subnet)), [
    '0.0.0.0/0', '10.0.0.0/8', '10.244.0.0/16', '10.244.0.0/24', '10.244.1.0/24', '10.244.2.0/24', '192.168.0.0/16',
  ], 'sorted by address, then length; top-bit addresses last');
  snap.pop();
  t.equal(rt.size, 7, 'mutating the snapshot array does not touch the table');
  rt.remove(pfx('10.0.0.0/8'));
  t.equal(snap.length, 6, 'later changes do not touch an earlier snapshot');
  t.ok(Object.isFrozen(snap[0]) && Object.isFrozen(snap[0]!.subnet), 'route objects are frozen');

  t.equal(show(rt.get(pfx('10.244.0.0/16'))), '10.244.0.0/16 via 192.0.2.9', 'exact get');
  t.equal(rt.get(pfx('10.244.7.0/24')), undefined, 'get is exact, not longest-prefix');
  t.equal(rt.get(pfx('10.0.0.0/8')), undefined, 'removed');

  const mutable = { subnet: { addr: ip('172.16.0.0'), len: 12 }, publicIp: ip('192.0.2.77') };
  rt.upsert(mutable);
  mutable.publicIp = ip('192.0.2.78');
  mutable.subnet.len = 16;
  t.equal(show(rt.lookup(ip('172.17.0.1'))), '172.16.0.0/12 via 192.0.2.77', 'the table keeps its own copy');
  t.equal(rt.isKnownPeer(ip('192.0.2.78')), false);
});

t.test('upsert rejects malformed routes', async (t) => {
  const rt = new RouteTable();
  t.throws(() => rt.upsert({ subnet: { addr: ip('10.244.1.1'), len: 24 }, publicIp: 1 }), RangeError, 'host bits set');
  t.throws(() => rt.upsert({ subnet: { addr: 0, len: 33 }, publicIp: 1 }), RangeError, 'len 33');
  t.throws(() => rt.upsert({ subnet: { addr: 0, len: -1 }, publicIp: 1 }), RangeError, 'len -1');
  t.throws(() => rt.upsert({ subnet: { addr: -16777216, len: 8 }, publicIp: 1 }), RangeError, 'signed addr');
  t.throws(() => rt.upsert({ subnet: { addr: 0, len: 0 }, publicIp: -1 }), RangeError, 'negative publicIp');
  t.throws(() => rt.upsert({ subnet: { addr: 0, len: 0 }, publicIp: 2 ** 32 }), RangeError, 'publicIp too large');
  t.equal(rt.size, 0, 'nothing was added');
  t.equal(rt.remove({ addr: ip('10.244.1.1'), len: 24 }), false, 'remove of a malformed prefix is false');
});
