import t from 'tap';
import { DirectRoutes, isOnLink, removeStaleDirectRoutes, OVERLAYD_RT_PROTO, type DirectRouteOps, type KernelRoute } from '../../src/net/direct-routes';
import { parseIp, parsePrefix, type Prefix } from '../../src/net/addr';
import { memoryLogger } from '../helpers/etcd';
import { RouteSync } from '../../src/control/route-sync';
import type { KvEntry } from '../../src/control/watch';

const ip = (s: string): number => parseIp(s) ?? -1;
const pfx = (s: string): Prefix => {
  const p = parsePrefix(s);
  if (!p) throw new Error(s);
  return p;
};
const P = String(OVERLAYD_RT_PROTO);

const TABLE: KernelRoute[] = [
  { dst: 'default', gateway: '10.99.0.254', dev: 'eth0' },
  { dst: '10.99.0.0/24', dev: 'eth0', protocol: 'kernel' },
  { dst: '10.99.0.128/25', gateway: '10.99.0.126', dev: 'eth0' },
  { dst: '10.98.0.0/24', dev: 'eth1', protocol: 'kernel' },
  { dst: '10.244.0.0/16', dev: 'flannel0' },
  { dst: '10.97.0.0/24', dev: 'eth0', type: 'blackhole' },
  { dst: '10.96.0.0/24', dev: 'eth0', protocol: P },
];

t.test('isOnLink: the best route to the peer has no gateway and leaves through the underlay (flannel RouteGet test)', async (t) => {
  t.ok(isOnLink(ip('10.99.0.2'), TABLE, 'eth0'), 'on the underlay subnet');
  t.notOk(isOnLink(ip('10.99.0.130'), TABLE, 'eth0'), 'a more specific route with a gateway wins');
  t.notOk(isOnLink(ip('10.99.1.3'), TABLE, 'eth0'), 'only the default route (gateway)');
  t.notOk(isOnLink(ip('10.98.0.3'), TABLE, 'eth0'), 'on-link, but on another interface');
  t.ok(isOnLink(ip('10.98.0.3'), TABLE, 'eth1'));
  t.notOk(isOnLink(ip('10.97.0.3'), TABLE, 'eth0'), 'blackhole routes are not links');
  t.notOk(isOnLink(ip('10.96.0.3'), TABLE, 'eth0'), "overlayd's own routes do not count");
  t.notOk(isOnLink(ip('10.99.0.2'), [], 'eth0'), 'empty table');
  const metric: KernelRoute[] = [{ dst: '10.99.0.0/24', gateway: '10.99.0.1', dev: 'eth0', metric: 5 }, { dst: '10.99.0.0/24', dev: 'eth0', metric: 1 }];
  t.ok(isOnLink(ip('10.99.0.2'), metric, 'eth0'), 'same prefix: the lower metric wins');
});

/** The fake kernel's local table: this host is 10.99.0.1 (and 10.99.0.50, a secondary address). */
const LOCAL: KernelRoute[] = [
  { type: 'local', dst: '10.99.0.1', dev: 'eth0', protocol: 'kernel' },
  { type: 'local', dst: '10.99.0.50', dev: 'eth0', protocol: 'kernel' },
  { type: 'local', dst: '127.0.0.0/8', dev: 'lo', protocol: 'kernel' },
];

/** A fake kernel: a main table that ip(8) route commands edit. */
function fakeKernel() {
  const table: KernelRoute[] = [
    { dst: '10.99.0.0/24', dev: 'eth0', protocol: 'kernel' },
    { dst: 'default', gateway: '10.99.0.254', dev: 'eth0' },
    { dst: '10.244.9.0/24', gateway: '10.99.0.9', dev: 'eth0', protocol: 'static' },
    { dst: '10.244.77.0/24', gateway: '10.99.0.77', dev: 'eth0', protocol: P },
  ];
  const calls: string[] = [];
  const sysctls = new Map<string, string>([
    ['net/ipv4/conf/all/rp_filter', '0'], ['net/ipv4/conf/eth0/rp_filter', '1'], ['net/ipv4/conf/flannel0/rp_filter', '0'],
  ]);
  let failNext = false;
  const ops: DirectRouteOps = {
    async ip(args) {
      const a = [...args];
      calls.push(a.join(' '));
      if (a.includes('show') && a.includes('local')) return JSON.stringify(LOCAL);
      if (a.includes('show')) return JSON.stringify(a.includes('proto') ? table.filter((r) => r.protocol === P) : table);
      if (failNext && a.includes('replace')) {
        failNext = false;
        throw new Error('RTNETLINK answers: Network is unreachable');
      }
      if (a.includes('flush')) {
        for (let i = table.length - 1; i >= 0; i--) if (table[i]?.protocol === P) table.splice(i, 1);
      } else if (a.includes('replace')) {
        const dst = a[3] ?? '';
        const i = table.findIndex((r) => r.dst === dst);
        const r: KernelRoute = { dst, gateway: a[5], dev: a[7], protocol: a[9] };
        if (i >= 0) table[i] = r;
        else table.push(r);
      } else if (a.includes('del')) {
        const i = table.findIndex((r) => r.dst === a[3] && r.protocol === P);
        if (i < 0) throw new Error('RTNETLINK answers: No such process');
        table.splice(i, 1);
      }
      return '';
    },
    async readSysctl(path) {
      return sysctls.get(path);
    },
    async writeSysctl(path, value) {
      sysctls.set(path, value);
      return true;
    },
  };
  return { table, calls, ops, sysctls, failOnce: () => { failNext = true; } };
}

const ours = (table: KernelRoute[]) => table.filter((r) => r.protocol === P).map((r) => `${r.dst} via ${r.gateway}`).sort();

t.test('DirectRoutes follows the routes it is given; touches only its own; flushes stale ones at start and all on close', async (t) => {
  const k = fakeKernel();
  const { logger, msgs } = memoryLogger('info');
  const d = await DirectRoutes.start({ underlay: 'eth0', tun: 'flannel0', logger, ops: k.ops });
  t.same(ours(k.table), [], 'a crashed instance\'s route is flushed at start');
  t.ok(msgs().some((m) => m.includes('removed direct routes left by an earlier instance')), 'and logged');
  t.notOk(msgs().some((m) => m.includes('rp_filter is off')), 'rp_filter: max(all, dev) = 1, no warning');
  t.equal(k.sysctls.get('net/ipv4/conf/flannel0/rp_filter'), '0', 'the TUN is not strict: left as it is');

  d.upsert({ subnet: pfx('10.244.2.0/24'), publicIp: ip('10.99.0.2') });
  d.upsert({ subnet: pfx('10.244.3.0/24'), publicIp: ip('10.99.1.3') });
  await d.idle();
  t.same(ours(k.table), ['10.244.2.0/24 via 10.99.0.2'], 'only the same-link peer gets a kernel route');
  t.equal(d.kindOf(pfx('10.244.2.0/24')), 'direct');
  t.equal(d.kindOf(pfx('10.244.3.0/24')), 'udp');
  t.equal(d.directCount(), 1);
  t.ok(k.calls.includes(`-4 route replace 10.244.2.0/24 via 10.99.0.2 dev eth0 proto ${P}`));

  d.upsert({ subnet: pfx('10.244.2.0/24'), publicIp: ip('10.99.0.22') });
  await d.idle();
  t.same(ours(k.table), ['10.244.2.0/24 via 10.99.0.22'], 'PublicIP changed on the link: the route follows');
  d.upsert({ subnet: pfx('10.244.2.0/24'), publicIp: ip('10.99.5.2') });
  await d.idle();
  t.same(ours(k.table), [], 'PublicIP moved off the link: the route goes, the tunnel takes over');
  t.equal(d.kindOf(pfx('10.244.2.0/24')), 'udp');
  d.upsert({ subnet: pfx('10.244.3.0/24'), publicIp: ip('10.99.0.3') });
  await d.idle();
  t.same(ours(k.table), ['10.244.3.0/24 via 10.99.0.3'], 'and a peer that moved onto the link gets one');

  d.upsert({ subnet: pfx('10.244.9.0/24'), publicIp: ip('10.99.0.9') });
  await d.idle();
  t.same(k.table.find((r) => r.dst === '10.244.9.0/24'), { dst: '10.244.9.0/24', gateway: '10.99.0.9', dev: 'eth0', protocol: 'static' }, 'a route someone else added is left alone');
  t.equal(d.kindOf(pfx('10.244.9.0/24')), 'udp');
  t.ok(msgs().some((m) => m.includes('already routed by someone else')));

  d.remove(pfx('10.244.3.0/24'));
  await d.idle();
  t.same(ours(k.table), [], 'lease gone: route gone');

  k.failOnce();
  d.upsert({ subnet: pfx('10.244.4.0/24'), publicIp: ip('10.99.0.4') });
  await d.idle();
  t.equal(d.kindOf(pfx('10.244.4.0/24')), 'udp', 'a failed install leaves the peer on the UDP path');
  t.ok(msgs().some((m) => m.includes('route change failed')));
  d.upsert({ subnet: pfx('10.244.5.0/24'), publicIp: ip('10.99.0.5') });
  d.upsert({ subnet: pfx('10.244.6.0/24'), publicIp: ip('10.99.0.6') });
  await d.idle();
  t.same(ours(k.table), ['10.244.5.0/24 via 10.99.0.5', '10.244.6.0/24 via 10.99.0.6']);

  await d.close();
  t.same(ours(k.table), [], 'close removes every route of ours');
  t.ok(k.table.some((r) => r.dst === '10.244.9.0/24'), 'and none of the others');
  const before = k.calls.length;
  d.upsert({ subnet: pfx('10.244.7.0/24'), publicIp: ip('10.99.0.7') });
  await d.idle();
  t.equal(k.calls.length, before, 'nothing is applied after close');
});

t.test("a peer whose PublicIP is one of this host's addresses gets no route (the kernel would take it and black-hole the subnet)", async (t) => {
  const k = fakeKernel();
  const { logger, msgs } = memoryLogger('info');
  const d = await DirectRoutes.start({ underlay: 'eth0', tun: 'flannel0', logger, ops: k.ops });
  d.upsert({ subnet: pfx('10.244.2.0/24'), publicIp: ip('10.99.0.2') });
  await d.idle();
  t.equal(d.kindOf(pfx('10.244.2.0/24')), 'direct');
  d.upsert({ subnet: pfx('10.244.2.0/24'), publicIp: ip('10.99.0.50') });
  d.upsert({ subnet: pfx('10.244.3.0/24'), publicIp: ip('10.99.0.1') });
  await d.idle();
  t.same(ours(k.table), [], 'the route via a peer that moved onto our own address is removed, none added');
  t.equal(d.kindOf(pfx('10.244.2.0/24')), 'udp');
  t.equal(d.kindOf(pfx('10.244.3.0/24')), 'udp');
  t.ok(msgs().some((m) => m.includes("PublicIP is an address of this host")), 'and said');
  await d.close();
});

t.test("a peer subnet overlapping this node's own gets no route (it would take this node's pods' traffic to the link)", async (t) => {
  const k = fakeKernel();
  const { logger, msgs } = memoryLogger('info');
  const d = await DirectRoutes.start({ underlay: 'eth0', tun: 'flannel0', ownSubnet: pfx('10.244.1.0/24'), logger, ops: k.ops });
  d.upsert({ subnet: pfx('10.244.1.0/25'), publicIp: ip('10.99.0.2') });
  d.upsert({ subnet: pfx('10.244.0.0/23'), publicIp: ip('10.99.0.3') });
  d.upsert({ subnet: pfx('10.244.2.0/24'), publicIp: ip('10.99.0.4') });
  await d.idle();
  t.same(ours(k.table), ['10.244.2.0/24 via 10.99.0.4'], 'inside ours, around ours: none; beside ours: routed');
  t.equal(msgs().filter((m) => m.includes("overlaps this node's own")).length, 2, 'each said');
  await d.close();
});

t.test('rp_filter off on the underlay: a warning names it', async (t) => {
  const k = fakeKernel();
  k.sysctls.set('net/ipv4/conf/eth0/rp_filter', '0');
  const { logger, msgs } = memoryLogger('info');
  const d = await DirectRoutes.start({ underlay: 'eth0', tun: 'flannel0', logger, ops: k.ops });
  t.ok(msgs().some((m) => m.includes('rp_filter is off on eth0')));
  await d.close();
});

t.test('strict rp_filter (all=1) in force on the TUN: the TUN is made loose (2), the underlay stays strict', async (t) => {
  const k = fakeKernel();
  k.sysctls.set('net/ipv4/conf/all/rp_filter', '1');
  const { logger } = memoryLogger('info');
  const d = await DirectRoutes.start({ underlay: 'eth0', tun: 'flannel0', logger, ops: k.ops });
  t.equal(k.sysctls.get('net/ipv4/conf/flannel0/rp_filter'), '2');
  t.equal(k.sysctls.get('net/ipv4/conf/eth0/rp_filter'), '1');
  t.equal(k.sysctls.get('net/ipv4/conf/all/rp_filter'), '1');
  await d.close();
});

t.test('fed by RouteSync: a resync after a broken watch moves the kernel routes by the difference', async (t) => {
  const k = fakeKernel();
  const { logger } = memoryLogger('warn');
  const d = await DirectRoutes.start({ underlay: 'eth0', tun: 'flannel0', logger, ops: k.ops });
  const PRE = '/coreos.com/network';
  let rev = 10;
  const lease = (subnet: string, pub: string): KvEntry => ({
    key: `${PRE}/subnets/${subnet.replace('/', '-')}`, value: `{"PublicIP":"${pub}","PublicIPv6":null}`, modRevision: ++rev, createRevision: rev, lease: '0',
  });
  const snap = (...es: KvEntry[]) => new Map(es.map((e) => [e.key, e]));
  const sync = new RouteSync({ prefix: PRE, network: pfx('10.244.0.0/16'), ownSubnet: pfx('10.244.1.0/24'), ownPublicIp: ip('10.99.0.1'), logger });
  sync.snapshot(snap(lease('10.244.1.0/24', '10.99.0.1'), lease('10.244.2.0/24', '10.99.0.2'), lease('10.244.3.0/24', '10.99.0.3')), 20, true);
  sync.attach(d);
  await d.idle();
  t.same(ours(k.table), ['10.244.2.0/24 via 10.99.0.2', '10.244.3.0/24 via 10.99.0.3'], 'initial set; never our own subnet');
  const calls = k.calls.length;
  // while the watch was broken: 10.244.2.0/24 went away, 10.244.3.0/24 moved, 10.244.4.0/24 came
  sync.snapshot(snap(lease('10.244.1.0/24', '10.99.0.1'), lease('10.244.3.0/24', '10.99.0.33'), lease('10.244.4.0/24', '10.99.0.4')), 30, false);
  await d.idle();
  t.same(ours(k.table), ['10.244.3.0/24 via 10.99.0.33', '10.244.4.0/24 via 10.99.0.4'], 'after the resync');
  sync.snapshot(snap(lease('10.244.1.0/24', '10.99.0.1'), lease('10.244.3.0/24', '10.99.0.33'), lease('10.244.4.0/24', '10.99.0.4')), 40, false);
  await d.idle();
  t.equal(k.calls.slice(calls).filter((c) => c.includes('replace') && c.includes('10.244.4.0/24')).length, 1, 'an unchanged route is not redone by a later resync');
  await d.close();
});

t.test('removeStaleDirectRoutes (DirectRouting off): deletes only routes of ours; none there: one look, nothing changed', async (t) => {
  const k = fakeKernel();
  const { logger } = memoryLogger('warn');
  t.equal(await removeStaleDirectRoutes(logger, k.ops), 1);
  t.same(ours(k.table), []);
  t.equal(k.table.length, 3, 'the other routes stay');
  const before = k.calls.length;
  t.equal(await removeStaleDirectRoutes(logger, k.ops), 0);
  t.same(k.calls.slice(before), [`-j -4 route show table main proto ${P}`]);
});
