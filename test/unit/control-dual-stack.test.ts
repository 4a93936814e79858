/**
 * Dual-stack control plane without etcd: flannel's key and value (MakeSubnetKey/ParseSubnetKey,
 * LeaseAttrs JSON), the IPv6 allocator, Route6 from leases (RouteSync with a recording sink),
 * and which IPv6 config changes are fatal.
 */
import t from 'tap';
import { chooseFreeSubnet6, exhaustedMessage6, isSubnet6InRange, rangeCount6, TakenSubnets6 } from '../../src/control/allocator';
import { classifyConfigChange } from '../../src/control/config-watch';
import {
  formatLeaseValue, parseLeaseValue, parseSubnetKey, parseSubnetKey6, parseSubnetKeyName6, subnetKey, subnetKeyName,
} from '../../src/control/etcd-schema';
import { parseNetworkConfig } from '../../src/control/network-config';
import { RouteSync } from '../../src/control/route-sync';
import type { KvEntry } from '../../src/control/watch';
import type { Route, Route6, RouteSink } from '../../src/dataplane/types';
import { formatIp, formatPrefix, parseIp, parsePrefix, type Prefix } from '../../src/net/addr';
import { formatIp6, formatPrefix6, parseIp6, parsePrefix6, type Prefix6 } from '../../src/net/addr6';
import { silentLogger } from '../../src/ops/log';

const PRE = '/coreos.com/network';
const CFG = `${PRE}/config`;
const P = (s: string): Prefix => {
  const p = parsePrefix(s);
  if (!p) throw new Error(s);
  return p;
};
const P6 = (s: string): Prefix6 => {
  const p = parsePrefix6(s);
  if (!p) throw new Error(s);
  return p;
};
const IP = (s: string): number => parseIp(s) ?? 0;
const IP6 = (s: string): bigint => {
  const a = parseIp6(s);
  if (a === undefined) throw new Error(s);
  return a;
};

t.test('key: flannel\'s MakeSubnetKey, both forms parsed', async (t) => {
  t.equal(subnetKey(PRE, P('10.244.3.0/24'), P6('fd00:10:244:3::/64')), '/coreos.com/network/subnets/10.244.3.0-24&fd00:10:244:3::-64');
  t.equal(subnetKey(PRE, P('10.244.3.0/24')), '/coreos.com/network/subnets/10.244.3.0-24', 'IPv4-only: as before');
  t.equal(subnetKeyName(P('10.244.3.0/24'), P6('fd00::/64')), '10.244.3.0-24&fd00::-64');
  t.equal(subnetKeyName(P('10.244.3.0/24'), P6('fd00:0:0:3::/64')), '10.244.3.0-24&fd00:0:0:3::-64', 'Go\'s text: single zero groups kept');
  const dual = '/coreos.com/network/subnets/10.244.3.0-24&fd00:10:244:3::-64';
  t.same(parseSubnetKey(PRE, dual), P('10.244.3.0/24'), 'the IPv4 part of a dual-stack key');
  t.same(parseSubnetKey6(PRE, dual), P6('fd00:10:244:3::/64'));
  t.equal(parseSubnetKey6(PRE, '/coreos.com/network/subnets/10.244.3.0-24'), undefined, 'IPv4-only key: no IPv6 part');
  t.equal(parseSubnetKey6('/other', dual), undefined, 'another prefix');
  for (const bad of [
    '10.244.3.0-24&fd00:10:244:3::1-64', // host bits
    '10.244.3.0-24&fd00::-129',
    '10.244.3.0-24&FD00::-64', // flannel's regexp: lower case only
    '10.244.3.0-24&fd00::g-64',
    '10.244.3.0-24&fd00::',
    '10.244.3.0-24&1.2.3.4-24',
    'x&fd00::-64',
  ]) t.equal(parseSubnetKeyName6(bad), undefined, bad);
});

t.test('value: json.Marshal of flannel\'s LeaseAttrs', async (t) => {
  t.equal(formatLeaseValue(IP('192.0.2.7')), '{"PublicIP":"192.0.2.7","PublicIPv6":null}', 'no PublicIPv6: null, as before');
  t.equal(formatLeaseValue(IP('192.0.2.7'), IP6('2001:db8:0:0:0:0:0:7')), '{"PublicIP":"192.0.2.7","PublicIPv6":"2001:db8::7"}');
  t.same(parseLeaseValue('{"PublicIP":"192.0.2.7","PublicIPv6":"2001:db8::7"}'), { ok: true, value: { publicIp: IP('192.0.2.7'), publicIpv6: IP6('2001:db8::7') } });
  // what flannel's vxlan backend writes on a dual-stack node
  const vx = '{"PublicIP":"10.0.0.2","PublicIPv6":"fc00::2","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:00"}}';
  t.same(parseLeaseValue(vx), { ok: true, value: { publicIp: IP('10.0.0.2'), publicIpv6: IP6('fc00::2'), backendType: 'vxlan' } });
  t.same(parseLeaseValue('{"PublicIP":"10.0.0.2"}'), { ok: true, value: { publicIp: IP('10.0.0.2') } }, 'absent PublicIPv6');
  t.same(parseLeaseValue('{"PublicIP":"10.0.0.2","PublicIPv6":"10.0.0.9"}'), {
    ok: true, value: { publicIp: IP('10.0.0.2'), badIpv6: 'PublicIPv6 "10.0.0.9" is not an IPv6 address' },
  }, 'a bad PublicIPv6 leaves the IPv4 part usable');
  t.same(parseLeaseValue('{"PublicIP":"10.0.0.2","PublicIPv6":7}'), { ok: true, value: { publicIp: IP('10.0.0.2'), badIpv6: 'PublicIPv6 7 is not an IPv6 address' } });
});

t.test('IPv6 allocator: range, taken, uniform pick, huge ranges, exhaustion', async (t) => {
  const c6 = parseNetworkConfig('{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/60"}', CFG).ipv6;
  if (!c6) throw new Error('no ipv6');
  t.equal(c6.subnetLen, 64);
  t.equal(rangeCount6(c6), 15n, '/60 in /64s: 16 minus the first (flannel: IPv6SubnetMin = network + size, IPv6SubnetMax = next network - size)');
  t.ok(isSubnet6InRange(c6, P6('fd00:0:0:1::/64')));
  t.ok(isSubnet6InRange(c6, P6('fd00:0:0:f::/64')), 'the last subnet is IPv6SubnetMax');
  t.notOk(isSubnet6InRange(c6, P6('fd00::/64')), 'the first subnet is never handed out');
  t.notOk(isSubnet6InRange(c6, P6('fd00:0:0:10::/64')), 'outside');
  t.notOk(isSubnet6InRange(c6, P6('fd00:0:0:2::/65')));
  const taken = new TakenSubnets6(64, [P6('fd00:0:0:1::/64'), P6('fd00:0:0:2::/63'), P6('fd00:0:0:5:8000::/65')]);
  t.ok(taken.has(IP6('fd00:0:0:1::')));
  t.ok(taken.has(IP6('fd00:0:0:3::')), 'inside a shorter lease');
  t.ok(taken.has(IP6('fd00:0:0:5::')), 'a longer lease takes its /64');
  t.notOk(taken.has(IP6('fd00:0:0:4::')));
  const seen = new Set<string>();
  let r = 0;
  const rnd = () => (r = (Math.imul(r, 1664525) + 1013904223) >>> 0) / 0x1_0000_0000;
  for (let i = 0; i < 200; i++) {
    const p = chooseFreeSubnet6(c6, taken, rnd);
    if (!p) throw new Error('none');
    t.notOk(taken.has(p.addr), formatPrefix6(p));
    seen.add(formatPrefix6(p));
  }
  t.equal(seen.size, 11, 'every one of the 11 free subnets gets picked');
  const all = new TakenSubnets6(64, [P6('fd00::/60')]);
  t.equal(chooseFreeSubnet6(c6, all), undefined);
  t.match(exhaustedMessage6(c6), /no free IPv6 subnet in IPv6Network fd00::\/60: all 15 subnets of length \/64 between IPv6SubnetMin fd00:0:0:1:: and IPv6SubnetMax fd00:0:0:f::/);

  const huge = parseNetworkConfig('{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00::/8"}', CFG).ipv6;
  if (!huge) throw new Error('no ipv6');
  t.equal(rangeCount6(huge), (1n << 56n) - 1n);
  const p = chooseFreeSubnet6(huge, new TakenSubnets6(64), Math.random);
  t.ok(p && isSubnet6InRange(huge, p), 'a random pick in a /8 (2^56 subnets) is in range');
  // every probe lands on a taken subnet: the bounded scan finds the free neighbour
  const first = huge.subnetMin;
  const busy = new TakenSubnets6(64, [{ addr: first, len: 64 }]);
  const q = chooseFreeSubnet6(huge, busy, () => 0);
  t.equal(q && formatPrefix6(q), formatPrefix6({ addr: first + (1n << 64n), len: 64 }));
});

class Rec implements RouteSink {
  readonly calls: string[] = [];
  upsert(r: Route): void {
    this.calls.push(`+4 ${formatPrefix(r.subnet)} ${formatIp(r.publicIp)}`);
  }
  remove(s: Prefix): void {
    this.calls.push(`-4 ${formatPrefix(s)}`);
  }
  upsert6(r: Route6): void {
    this.calls.push(`+6 ${formatPrefix6(r.subnet)} ${formatIp(r.publicIp)} ${r.publicIpv6 === undefined ? 'v4' : formatIp6(r.publicIpv6)}`);
  }
  remove6(s: Prefix6): void {
    this.calls.push(`-6 ${formatPrefix6(s)}`);
  }
}

let rev = 1000;
const kv = (name: string, value: string): KvEntry => ({ key: `${PRE}/subnets/${name}`, value, modRevision: ++rev, createRevision: rev, lease: '0' });
const val = (ip: string, ip6?: string) => formatLeaseValue(IP(ip), ip6 === undefined ? undefined : IP6(ip6));

function sync(ipv6Underlay: boolean) {
  return new RouteSync({
    prefix: PRE, network: P('10.244.0.0/16'), ownSubnet: P('10.244.1.0/24'), ownPublicIp: IP('192.0.2.1'), logger: silentLogger(),
    ipv6: { network: P6('fd00:10:244::/56'), ownSubnet: P6('fd00:10:244:1::/64'), ipv6Underlay },
  });
}

t.test('RouteSync dual-stack: Route6 per lease with a v6 part, the underlay rule, IPv4-only and flannel peers', async (t) => {
  const s = sync(true);
  const sink = new Rec();
  const entries: KvEntry[] = [
    kv('10.244.1.0-24&fd00:10:244:1::-64', val('192.0.2.1', '2001:db8::1')), // our own
    kv('10.244.2.0-24&fd00:10:244:2::-64', val('192.0.2.2', '2001:db8::2')), // dual-stack with PublicIPv6
    kv('10.244.3.0-24&fd00:10:244:3::-64', val('192.0.2.3')), // dual-stack, no PublicIPv6
    kv('10.244.4.0-24', val('192.0.2.4')), // IPv4-only (older flannel)
    kv('10.244.5.0-24&fd00:10:245:5::-64', val('192.0.2.5', '2001:db8::5')), // v6 outside IPv6Network
    kv('10.244.6.0-24&fd00:10:244:6::-64', '{"PublicIP":"192.0.2.6","PublicIPv6":"fc00::6","BackendType":"vxlan","BackendData":{"VNI":1}}'),
    kv('10.245.7.0-24&fd00:10:244:7::-64', val('192.0.2.7', '2001:db8::7')), // v4 outside Network: no v6 either
  ];
  s.snapshot(new Map(entries.map((e) => [e.key, e])), 1, true);
  s.attach(sink);
  t.same(sink.calls.filter((c) => c.startsWith('+6')).sort(), [
    '+6 fd00:10:244:2::/64 192.0.2.2 2001:db8::2',
    '+6 fd00:10:244:3::/64 192.0.2.3 v4',
    '+6 fd00:10:244:6::/64 192.0.2.6 fc00::6',
  ], 'not our own, not the IPv4-only one, not one outside IPv6Network or Network');
  t.same(sink.calls.filter((c) => c.startsWith('+4')).sort(), [
    '+4 10.244.2.0/24 192.0.2.2', '+4 10.244.3.0/24 192.0.2.3', '+4 10.244.4.0/24 192.0.2.4', '+4 10.244.5.0/24 192.0.2.5', '+4 10.244.6.0/24 192.0.2.6',
  ], 'every lease keeps its IPv4 route');
  t.equal(s.routes6().length, 3);

  // changes: PublicIPv6 appears, a lease goes, the v6 part moves
  sink.calls.length = 0;
  s.put(kv('10.244.3.0-24&fd00:10:244:3::-64', val('192.0.2.3', '2001:db8::3')));
  t.same(sink.calls, ['+6 fd00:10:244:3::/64 192.0.2.3 2001:db8::3'], 'only the IPv6 route changes (the IPv4 one is the same)');
  sink.calls.length = 0;
  s.delete(`${PRE}/subnets/10.244.2.0-24&fd00:10:244:2::-64`);
  t.same(sink.calls.sort(), ['-4 10.244.2.0/24', '-6 fd00:10:244:2::/64']);
  sink.calls.length = 0;
  s.put(kv('10.244.4.0-24&fd00:10:244:4::-64', val('192.0.2.4', '2001:db8::4')));
  t.same(sink.calls, ['+6 fd00:10:244:4::/64 192.0.2.4 2001:db8::4'], 'the IPv4-only node re-leased dual-stack: IPv4 route unchanged, IPv6 route added');
  sink.calls.length = 0;
  s.delete(`${PRE}/subnets/10.244.4.0-24`);
  t.same(sink.calls, [], 'its old IPv4-only key going changes nothing (the new key names the same IPv4 subnet)');
  sink.calls.length = 0;
  s.put(kv('10.244.6.0-24&fd00:10:244:6::-64', val('192.0.2.66', 'fc00::66')));
  t.same(sink.calls.sort(), ['+4 10.244.6.0/24 192.0.2.66', '+6 fd00:10:244:6::/64 192.0.2.66 fc00::66'], 'a new holder: both routes follow');
  sink.calls.length = 0;
  s.snapshot(new Map(), 2, false);
  t.equal(s.routes6().length, 0, 'resync to nothing removes every IPv6 route');
  t.ok(sink.calls.includes('-6 fd00:10:244:3::/64'));
});

t.test('RouteSync dual-stack: --ipv6-underlay ipv4 (or no own PublicIPv6): every Route6 over IPv4', async (t) => {
  const s = sync(false);
  const sink = new Rec();
  s.attach(sink);
  s.put(kv('10.244.2.0-24&fd00:10:244:2::-64', val('192.0.2.2', '2001:db8::2')));
  t.same(sink.calls, ['+4 10.244.2.0/24 192.0.2.2', '+6 fd00:10:244:2::/64 192.0.2.2 v4']);
});

t.test('RouteSync IPv4-only network: IPv6 parts are not looked at, no upsert6', async (t) => {
  const s = new RouteSync({ prefix: PRE, network: P('10.244.0.0/16'), ownSubnet: P('10.244.1.0/24'), ownPublicIp: IP('192.0.2.1'), logger: silentLogger() });
  const sink = new Rec();
  s.attach(sink);
  s.put(kv('10.244.2.0-24&fd00:10:244:2::-64', val('192.0.2.2', '2001:db8::2')));
  s.put(kv('10.244.3.0-24', val('192.0.2.3')));
  t.same(sink.calls, ['+4 10.244.2.0/24 192.0.2.2', '+4 10.244.3.0/24 192.0.2.3']);
  t.same(s.routes6(), []);
});

t.test('config changes of the IPv6 fields', async (t) => {
  const base = { Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:10:244::/56', IPv6SubnetMin: 'fd00:10:244:10::', IPv6SubnetMax: 'fd00:10:244:20::' };
  const running = parseNetworkConfig(JSON.stringify(base), CFG);
  const own = P('10.244.12.0/24');
  const own6 = P6('fd00:10:244:12::/64');
  const classify = (doc: object) => classifyConfigChange(running, own, CFG, JSON.stringify(doc), own6);
  t.same(classify({ ...base }), { kind: 'same' });
  t.same(classify({ ...base, EnableIPv4: true, IPv6SubnetLen: 64 }), { kind: 'same' }, 'defaults spelled out');
  const fatal = (doc: object, re: RegExp) => {
    const c = classify(doc);
    t.equal(c.kind, 'fatal', JSON.stringify(doc));
    if (c.kind === 'fatal') t.match(c.message, re);
  };
  fatal({ ...base, IPv6Network: 'fd00:10:245::/56', IPv6SubnetMin: undefined, IPv6SubnetMax: undefined }, /IPv6Network fd00:10:244::\/56 -> fd00:10:245::\/56/);
  fatal({ ...base, IPv6SubnetLen: 80 }, /IPv6SubnetLen 64 -> 80/);
  fatal({ ...base, EnableIPv6: false }, /EnableIPv6 true -> false/);
  fatal({ ...base, IPv6SubnetMin: 'fd00:10:244:13::' }, /IPv6SubnetMin\/IPv6SubnetMax .* no longer contains this node's IPv6 subnet fd00:10:244:12::\/64/);
  t.same(classify({ ...base, IPv6SubnetMax: 'fd00:10:244:30::' }), {
    kind: 'harmless', what: 'IPv6SubnetMin/IPv6SubnetMax [fd00:10:244:10::..fd00:10:244:20::] -> [fd00:10:244:10::..fd00:10:244:30::] (still contains fd00:10:244:12::/64)',
  });
  t.equal(classify({ ...base, IPv6SubnetLen: 3 }).kind, 'invalid', 'an invalid IPv6 part keeps the config in force');
  // an IPv4-only node: turning EnableIPv6 on is a change to restart for; IPv6 fields alone are not read
  const v4 = parseNetworkConfig('{"Network":"10.244.0.0/16"}', CFG);
  t.equal(classifyConfigChange(v4, own, CFG, '{"Network":"10.244.0.0/16","IPv6Network":"fd00::/56"}').kind, 'same');
  const on = classifyConfigChange(v4, own, CFG, JSON.stringify({ ...base, IPv6SubnetMin: undefined, IPv6SubnetMax: undefined }));
  t.equal(on.kind, 'fatal');
  if (on.kind === 'fatal') t.match(on.message, /EnableIPv6 false -> true/);
});
