/**
 * Dual-stack firewall rules (src/net/firewall.ts, src/net/masq.ts with IPv6Network) against
 * a fake command runner: flanneld's ip6tables rule set, the ip6 masquerade table, detection
 * of IPv6 forward drops in every backend, and that an IPv4-only firewall runs no IPv6 command.
 */
import t from 'tap';
import pino from 'pino';
import {
  detectForwardDrops, iptablesForwardRules, nftForwardRules, removeAllForward, Firewall, NFT_FWD_COMMENT6, type ForwardSite,
} from '../../src/net/firewall';
import { masqRules, masqScript } from '../../src/net/masq';
import { parsePrefix } from '../../src/net/addr';
import { parsePrefix6 } from '../../src/net/addr6';
import { chains, fakeSystem } from '../helpers/fake-firewall';

const NET = parsePrefix('10.244.0.0/16')!;
const SUB = parsePrefix('10.244.3.0/24')!;
const NET6 = parsePrefix6('fd00:10:244::/56')!;
const SUB6 = parsePrefix6('fd00:10:244:3::/64')!;

const silent = pino({ level: 'silent' });

t.test("masquerade: flanneld's masqIP6Rules, in its order, in table ip6 overlayd", async (t) => {
  t.same(masqRules({ family: 'ip6', network: NET6, subnet: SUB6, fullyRandom: true }), [
    'meta mark & 0x00004000 == 0x00004000 return',
    'ip6 saddr fd00:10:244:3::/64 ip6 daddr fd00:10:244::/56 return',
    'ip6 saddr fd00:10:244::/56 ip6 daddr fd00:10:244:3::/64 return',
    'ip6 saddr != fd00:10:244::/56 ip6 daddr fd00:10:244:3::/64 return',
    'ip6 saddr fd00:10:244::/56 ip6 daddr != ff00::/8 masquerade fully-random',
    'ip6 saddr != fd00:10:244::/56 ip6 daddr fd00:10:244::/56 masquerade fully-random',
  ]);
  const script = masqScript({ family: 'ip6', network: NET6, subnet: SUB6, fullyRandom: false });
  t.match(script, /^table ip6 overlayd\ndelete table ip6 overlayd\ntable ip6 overlayd \{\n  chain postrouting \{\n    type nat hook postrouting priority srcnat; policy accept;\n/);
  t.notMatch(script, /fully-random/);
  t.equal(script.match(/comment "flanneld masq"/g)?.length, 6);
  t.match(masqScript({ network: NET, subnet: SUB, fullyRandom: false }), /^table ip overlayd\n/, 'IPv4 plan unchanged');
});

t.test("forward: flanneld's ip6tables rules; native accepts match ip6", async (t) => {
  t.same(iptablesForwardRules(NET6), [
    ['FORWARD', ['-m', 'comment', '--comment', 'flanneld forward', '-j', 'FLANNEL-FWD']],
    ['FLANNEL-FWD', ['-s', 'fd00:10:244::/56', '-m', 'comment', '--comment', 'flanneld forward', '-j', 'ACCEPT']],
    ['FLANNEL-FWD', ['-d', 'fd00:10:244::/56', '-m', 'comment', '--comment', 'flanneld forward', '-j', 'ACCEPT']],
  ]);
  const site: ForwardSite = { backend: 'nftables', family: 'inet', table: 'hostfw', chain: 'fwd', before: 9, ipv6: true };
  t.same(nftForwardRules(site, NET6), ['saddr', 'daddr'].map((field) => ({
    insert: {
      rule: {
        family: 'inet', table: 'hostfw', chain: 'fwd', comment: NFT_FWD_COMMENT6, handle: 9,
        expr: [{ match: { op: '==', left: { payload: { protocol: 'ip6', field } }, right: { prefix: { addr: 'fd00:10:244::', len: 56 } } } }, { accept: null }],
      },
    },
  })));
});

t.test('detection (IPv6): ip6tables-legacy, ip6tables-nft, ip6/inet native chains; ip chains ignored', async (t) => {
  const listing = chains(
    { family: 'ip6', table: 'filter', name: 'FORWARD', handle: 1, type: 'filter', hook: 'forward', policy: 'drop' },
    { family: 'ip', table: 'filter', name: 'FORWARD', handle: 1, type: 'filter', hook: 'forward', policy: 'drop' },
    { family: 'inet', table: 'hostfw', name: 'fwd', handle: 2, type: 'filter', hook: 'forward', policy: 'drop' },
    { family: 'ip6', table: 'other', name: 'fwd6', handle: 3, type: 'filter', hook: 'forward', policy: 'accept' },
  );
  const { sys, calls } = fakeSystem((line) => {
    if (line === 'nft -j list chains') return { stdout: listing };
    if (line === 'ip6tables-legacy -w -t filter -S FORWARD') return { stdout: '-P FORWARD DROP\n' };
    if (line === 'ip6tables-nft -w -t filter -S FORWARD') return { stdout: '-P FORWARD DROP\n' };
    if (line.startsWith('nft -j list chain')) return { stdout: '{"nftables":[]}' };
    return undefined;
  }, { '/proc/net/ip6_tables_names': 'filter\n' });
  const sites = await detectForwardDrops(sys, true);
  t.same(sites, [
    { backend: 'iptables-legacy', family: 'ip6', table: 'filter', chain: 'FORWARD', ipv6: true },
    { backend: 'iptables-nft', family: 'ip6', table: 'filter', chain: 'FORWARD', ipv6: true },
    { backend: 'nftables', family: 'inet', table: 'hostfw', chain: 'fwd', ipv6: true },
  ]);
  t.notOk(calls.some((c) => c.startsWith('iptables-')), 'no IPv4 iptables command');
  // the IPv4 detection of the same host does not see the ip6 chains
  const v4 = await detectForwardDrops(fakeSystem((line) => (line === 'nft -j list chains' ? { stdout: listing } : line.startsWith('nft -j list chain') ? { stdout: '{"nftables":[]}' } : line.includes('-S FORWARD') ? { stdout: '-P FORWARD DROP\n' } : undefined)).sys);
  t.same(v4.map((s) => `${s.backend} ${s.family}`), ['iptables-nft ip', 'nftables inet']);
});

t.test('remove (IPv6): only the IPv6 comment in native chains', async (t) => {
  const ruleset = JSON.stringify({
    nftables: [
      { rule: { family: 'inet', table: 'hostfw', chain: 'fwd', handle: 4, comment: 'overlayd forward' } },
      { rule: { family: 'inet', table: 'hostfw', chain: 'fwd', handle: 5, comment: NFT_FWD_COMMENT6 } },
    ],
  });
  const { sys, calls } = fakeSystem((line) => (line === 'nft -j list chains' || line === 'nft -j list ruleset' ? { stdout: ruleset } : undefined));
  t.same(await removeAllForward(sys, true), ['nftables']);
  const del = calls.find((c) => c.startsWith('nft -j {'));
  t.same(JSON.parse(del!.slice('nft -j '.length)), { nftables: [{ delete: { rule: { family: 'inet', table: 'hostfw', chain: 'fwd', handle: 5 } } }] });
});

/** What `nft -j list table F overlayd` shows when our masquerade table is complete. */
function masqListing(family: string): string {
  return JSON.stringify({
    nftables: [
      { chain: { family, table: 'overlayd', name: 'postrouting', handle: 1, type: 'nat', hook: 'postrouting', prio: 100, policy: 'accept' } },
      ...Array.from({ length: 6 }, (_, i) => ({ rule: { family, table: 'overlayd', chain: 'postrouting', handle: 2 + i, comment: 'flanneld masq' } })),
    ],
  });
}

/** A host whose iptables-legacy and ip6tables-legacy FORWARD policies are drop; rules tracked per family. */
function dualLegacyHost() {
  const state = { v4: false, v6: false, masq: false, masq6: false };
  const fake = fakeSystem((line, stdin) => {
    for (const [bin, key] of [['iptables-legacy', 'v4'], ['ip6tables-legacy', 'v6']] as const) {
      if (line === `${bin} -w -t filter -S FORWARD`) return { stdout: '-P FORWARD DROP\n' };
      if (line.startsWith(`${bin} -w -t filter -C`)) return { code: state[key] ? 0 : 1 };
      if (line.startsWith(`${bin} -w -t filter -A FORWARD`)) state[key] = true;
      if (line.startsWith(`${bin} -w -t filter -D FORWARD`)) { const was = state[key]; state[key] = false; return { code: was ? 0 : 1 }; }
    }
    if (line.startsWith('nft -j list chains') || line === 'nft -j list ruleset') return { stdout: '{"nftables":[]}' };
    for (const [f, key] of [['ip', 'masq'], ['ip6', 'masq6']] as const) {
      if (line === `nft -j list table ${f} overlayd`) return state[key] ? { stdout: masqListing(f) } : { code: 1 };
    }
    if (line === 'nft list table ip overlayd') return { code: state.masq ? 0 : 1 };
    if (line === 'nft list table ip6 overlayd') return { code: state.masq6 ? 0 : 1 };
    if (line === 'nft -f -' && stdin !== undefined) {
      const key = stdin.startsWith('table ip6 ') ? 'masq6' : 'masq';
      state[key] = !stdin.trimEnd().endsWith(`delete table ${key === 'masq6' ? 'ip6' : 'ip'} overlayd`);
    }
    return undefined;
  }, { '/proc/net/ip_tables_names': 'filter\n', '/proc/net/ip6_tables_names': 'filter\n' });
  return { state, ...fake };
}

t.test('Firewall (dual-stack): both families installed, repaired, removed; masquerade tables for both', async (t) => {
  const host = dualLegacyHost();
  host.state.v6 = true; // a killed instance's IPv6 rules
  const fw = new Firewall({ forwardRules: true, ipMasq: true, fullyRandom: true, resyncSeconds: 3600, network: NET, subnet: SUB, ipv6: { network: NET6, subnet: SUB6 }, logger: silent, sys: host.sys });
  await fw.start();
  t.ok(host.state.v4 && host.state.v6, 'forward rules of both families');
  t.ok(host.state.masq && host.state.masq6, 'both masquerade tables');
  t.ok(host.calls.includes('ip6tables-legacy -w -t filter -A FLANNEL-FWD -s fd00:10:244::/56 -m comment --comment flanneld forward -j ACCEPT'));
  t.same(fw.status().forward, [
    { backend: 'iptables-legacy', chain: 'ip filter FORWARD', present: true },
    { backend: 'iptables-legacy', chain: 'ip6 filter FORWARD', present: true, ipv6: true },
  ]);
  host.state.v6 = false;
  host.state.masq6 = false;
  await fw.check();
  t.ok(host.state.v6, 'IPv6 forward rules put back');
  t.ok(host.state.masq6, 'IPv6 masquerade table put back');
  t.equal(fw.status().repairs, 2);
  await fw.stop();
  t.notOk(host.state.v4 || host.state.v6 || host.state.masq || host.state.masq6, 'all removed at stop');
});

t.test('Firewall (IPv4 only): no IPv6 command at all', async (t) => {
  const host = dualLegacyHost();
  const fw = new Firewall({ forwardRules: true, ipMasq: true, fullyRandom: true, resyncSeconds: 3600, network: NET, subnet: SUB, logger: silent, sys: host.sys });
  await fw.start();
  await fw.check();
  await fw.stop();
  t.notOk(host.calls.some((c) => c.startsWith('ip6tables') || c.includes(' ip6 ')), 'nothing about IPv6');
  t.notOk(host.state.v6);
});
