import t from 'tap';
import { selectUnderlay, underlayIpv6, type IpRunner } from '../../src/net/underlay';
import { ConfigError, LinkError } from '../../src/errors';
import type { UnderlaySelection } from '../../src/config';

/** A host with three interfaces, as `ip -j addr show` prints them (fields trimmed). */
const LINKS = [
  { ifname: 'lo', mtu: 65536, addr_info: [{ family: 'inet', local: '127.0.0.1' }] },
  { ifname: 'eth0', mtu: 1500, addr_info: [{ family: 'inet', local: '192.0.2.10' }, { family: 'inet6', local: 'fe80::1' }] },
  { ifname: 'ens5', mtu: 9001, addr_info: [{ family: 'inet', local: '10.1.0.5' }, { family: 'inet', local: '10.2.0.5' }] },
  { ifname: 'dummy0', mtu: 1500, addr_info: [] },
];

function fakeIp(routes: { get?: Record<string, unknown[]>; default?: unknown[] } = {}): { run: IpRunner; calls: string[] } {
  const calls: string[] = [];
  const run: IpRunner = async (args) => {
    const cmd = args.join(' ');
    calls.push(cmd);
    if (cmd === '-j addr show') return JSON.stringify(LINKS);
    if (cmd === '-j -4 route show default') return JSON.stringify(routes.default ?? []);
    const m = /^-j -4 route get (\S+)$/.exec(cmd);
    if (m) {
      const r = routes.get?.[m[1] as string];
      if (r === undefined) throw new LinkError(`ip ${cmd}`, 'RTNETLINK answers: Network is unreachable');
      return JSON.stringify(r);
    }
    throw new Error(`unexpected ip ${cmd}`);
  };
  return { run, calls };
}

const sel = (s: Partial<UnderlaySelection>): UnderlaySelection => ({ iface: [], ifaceRegex: [], ...s });

t.test('no selection: the interface of the default route', async (t) => {
  const { run } = fakeIp({ default: [{ dst: 'default', gateway: '192.0.2.1', dev: 'eth0' }] });
  t.same(await selectUnderlay(sel({}), run), { name: 'eth0', mtu: 1500, address: '192.0.2.10' });
  await t.rejects(selectUnderlay(sel({}), fakeIp().run), /no IPv4 default route/);
});

t.test('--iface in order: the first that exists wins, by name or by address', async (t) => {
  const { run } = fakeIp();
  t.same(await selectUnderlay(sel({ iface: ['eth9', 'ens5', 'eth0'] }), run), { name: 'ens5', mtu: 9001, address: '10.1.0.5' });
  t.same(await selectUnderlay(sel({ iface: ['10.9.9.9', '10.2.0.5'] }), run), { name: 'ens5', mtu: 9001, address: '10.2.0.5' }, 'by address: that address, not the first');
  t.same(await selectUnderlay(sel({ iface: ['dummy0'] }), run), { name: 'dummy0', mtu: 1500, address: undefined }, 'no IPv4: the daemon asks for --public-ip');
});

t.test('--iface-regex after --iface: addresses first, then names', async (t) => {
  const { run } = fakeIp();
  t.same(await selectUnderlay(sel({ iface: ['eth9'], ifaceRegex: ['^10\\.2\\.'] }), run), { name: 'ens5', mtu: 9001, address: '10.2.0.5' });
  t.same(await selectUnderlay(sel({ ifaceRegex: ['^nomatch', '^ens'] }), run), { name: 'ens5', mtu: 9001, address: '10.1.0.5' }, 'the second expression, by name');
  t.same(await selectUnderlay(sel({ ifaceRegex: ['0\\.5$'] }), run), { name: 'ens5', mtu: 9001, address: '10.1.0.5' }, 'an address match');
  t.same(await selectUnderlay(sel({ iface: ['eth0'], ifaceRegex: ['^ens'] }), run), { name: 'eth0', mtu: 1500, address: '192.0.2.10' }, '--iface first');
});

t.test('--iface-can-reach: the interface and source of ip route get', async (t) => {
  const { run, calls } = fakeIp({ get: { '10.1.7.7': [{ dst: '10.1.7.7', dev: 'ens5', prefsrc: '10.1.0.5' }] } });
  t.same(await selectUnderlay(sel({ ifaceCanReach: '10.1.7.7' }), run), { name: 'ens5', mtu: 9001, address: '10.1.0.5' });
  t.ok(calls.includes('-j -4 route get 10.1.7.7'));
  t.same(await selectUnderlay(sel({ iface: ['eth0'], ifaceCanReach: '10.1.7.7' }), run), { name: 'eth0', mtu: 1500, address: '192.0.2.10' }, 'after --iface');
});

t.test('nothing matches: one ConfigError naming every attempt and the interfaces present', async (t) => {
  const { run } = fakeIp();
  const p = selectUnderlay(sel({ iface: ['eth9', '10.9.9.9'], ifaceRegex: ['^wl'], ifaceCanReach: '203.0.113.1' }), run);
  await t.rejects(p, ConfigError);
  await t.rejects(p, /^no underlay interface matches: --iface eth9 \(no such interface\), --iface 10\.9\.9\.9 \(no interface has this address\), --iface-regex \^wl \(matches no interface address or name\), --iface-can-reach 203\.0\.113\.1 \(.*Network is unreachable\); interfaces here: lo 127\.0\.0\.1; eth0 192\.0\.2\.10; ens5 10\.1\.0\.5,10\.2\.0\.5; dummy0$/);
});

t.test('underlayIpv6: the first usable global IPv6 address of the interface (dual-stack PublicIPv6 without --public-ipv6)', async (t) => {
  const links = [
    { ifname: 'eth0', mtu: 1500, addr_info: [
      { family: 'inet', local: '192.0.2.10', scope: 'global' },
      { family: 'inet6', local: 'fe80::1', scope: 'link' },
      { family: 'inet6', local: '2001:db8::dead', scope: 'global', deprecated: true },
      { family: 'inet6', local: '2001:db8::beef', scope: 'global', tentative: true },
      { family: 'inet6', local: '2001:DB8:0:0:0:0:0:7', scope: 'global' },
      { family: 'inet6', local: '2001:db8::8', scope: 'global' },
    ] },
    { ifname: 'eth1', mtu: 1500, addr_info: [{ family: 'inet', local: '10.0.0.1' }, { family: 'inet6', local: 'fe80::2', scope: 'link' }] },
  ];
  const run: IpRunner = async (args) => {
    if (args.join(' ') !== '-j addr show') throw new Error(`unexpected ip ${args.join(' ')}`);
    return JSON.stringify(links);
  };
  t.equal(await underlayIpv6('eth0', run), '2001:db8::7', 'canonical text, skipping link-local, deprecated and tentative');
  t.equal(await underlayIpv6('eth1', run), undefined, 'only link-local: none');
  t.equal(await underlayIpv6('nope', run), undefined);
});
