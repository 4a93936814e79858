/**
 * Underlay selection (--iface in order, --iface-regex, --iface-can-reach, default route)
 * against the real ip(8) in a namespace created here with three interfaces (per-run prefix,
 * always deleted). A child node process inside the namespace runs selectUnderlay and prints
 * the result; no packet is sent.
 */
import t from 'tap';
import * as path from 'node:path';
import { isRoot } from '../helpers/exec';
import { NetnsSet } from '../helpers/netns';
import type { UnderlaySelection } from '../../src/config';

const MODULE = path.resolve(__dirname, '..', '..', 'src', 'net', 'underlay.js');

if (!isRoot) {
  t.skip('SKIP: e2e underlay test needs root (network namespace)', () => undefined);
} else {
  const netns = new NetnsSet('ovtu');

  t.test('selectUnderlay on a multi-homed namespace', async (t) => {
    t.teardown(() => netns.cleanup());
    const ns = netns.add('host');
    // ethA: the default route; ens7: two addresses and a route to 10.77.0.0/16 from the second
    netns.ip(ns, 'link', 'add', 'ethA', 'type', 'veth', 'peer', 'name', 'ethAp');
    netns.ip(ns, 'link', 'add', 'ens7', 'type', 'veth', 'peer', 'name', 'ens7p');
    for (const dev of ['ethA', 'ethAp', 'ens7', 'ens7p']) netns.ip(ns, 'link', 'set', dev, 'up');
    netns.ip(ns, 'addr', 'add', '10.61.0.2/24', 'dev', 'ethA');
    netns.ip(ns, 'addr', 'add', '10.62.0.2/24', 'dev', 'ens7');
    netns.ip(ns, 'addr', 'add', '10.63.0.2/24', 'dev', 'ens7');
    netns.ip(ns, 'route', 'add', 'default', 'dev', 'ethA');
    netns.ip(ns, 'route', 'add', '10.77.0.0/16', 'dev', 'ens7', 'src', '10.63.0.2');

    const select = (s: Partial<UnderlaySelection>): { ok?: { name: string; address?: string }; err?: string } => {
      const sel: UnderlaySelection = { iface: [], ifaceRegex: [], ...s };
      const script = `require(${JSON.stringify(MODULE)}).selectUnderlay(${JSON.stringify(sel)}).then(
        (u) => console.log(JSON.stringify({ ok: { name: u.name, address: u.address } })),
        (e) => console.log(JSON.stringify({ err: e.message })))`;
      const r = netns.tryExec(ns, process.execPath, ['-e', script], 30_000);
      return JSON.parse(r.stdout.trim().split('\n').at(-1) ?? '{}') as { ok?: { name: string; address?: string }; err?: string };
    };

    t.same(select({}), { ok: { name: 'ethA', address: '10.61.0.2' } }, 'default route');
    t.same(select({ iface: ['eth9', 'ens7', 'ethA'] }), { ok: { name: 'ens7', address: '10.62.0.2' } }, '--iface in order');
    t.same(select({ iface: ['10.63.0.2'] }), { ok: { name: 'ens7', address: '10.63.0.2' } }, '--iface by a secondary address');
    t.same(select({ iface: ['eth9'], ifaceRegex: ['^10\\.63\\.'] }), { ok: { name: 'ens7', address: '10.63.0.2' } }, '--iface-regex on addresses');
    t.same(select({ ifaceRegex: ['^ens7$'] }), { ok: { name: 'ens7', address: '10.62.0.2' } }, '--iface-regex on names');
    t.same(select({ ifaceRegex: ['^ens'] }), { ok: { name: 'ens7p' } }, '--iface-regex: the first interface by index (the veth peer, created first), as flanneld');
    t.same(select({ ifaceCanReach: '10.77.1.1' }), { ok: { name: 'ens7', address: '10.63.0.2' } }, '--iface-can-reach: the route\'s device and source');
    const none = select({ iface: ['eth9'], ifaceRegex: ['^wl'] });
    t.match(none.err, /^no underlay interface matches: --iface eth9 \(no such interface\), --iface-regex \^wl \(matches no interface address or name\); interfaces here: /);
  });
}
