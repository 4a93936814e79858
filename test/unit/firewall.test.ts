/**
 * Rule generation and backend detection of the firewall modules (src/net/firewall.ts,
 * src/net/masq.ts) against a fake command runner: no root, no iptables, no nft.
 */
import t from 'tap';
import pino from 'pino';
import type { FirewallSystem } from '../../src/net/fwexec';
import { detectForwardDrops, forwardPresent, installForward, iptablesForwardRules, iptablesTerminal, nftForwardRules, removeAllForward, Firewall, FULL_CHECK_EVERY, type ForwardSite } from '../../src/net/firewall';
import { installMasq, masqRules, masqScript, masqPresent } from '../../src/net/masq';
import { parsePrefix } from '../../src/net/addr';
import { parseDaemonArgs, type Config } from '../../src/config';
import { chains, fakeSystem } from '../helpers/fake-firewall';

const NET = parsePrefix('10.244.0.0/16')!;
const SUB = parsePrefix('10.244.3.0/24')!;

function memLogger(): { logger: pino.Logger; lines: Array<Record<string, unknown>> } {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'info' }, { write: (s: string) => { lines.push(JSON.parse(s) as Record<string, unknown>); } });
  return { logger, lines };
}

t.test("masquerade: flanneld's rule set, in its order", async (t) => {
  t.same(masqRules({ network: NET, subnet: SUB, fullyRandom: true }), [
    'meta mark & 0x00004000 == 0x00004000 return',
    'ip saddr 10.244.3.0/24 ip daddr 10.244.0.0/16 return',
    'ip saddr 10.244.0.0/16 ip daddr 10.244.3.0/24 return',
    'ip saddr != 10.244.0.0/16 ip daddr 10.244.3.0/24 return',
    'ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade fully-random',
    'ip saddr != 10.244.0.0/16 ip daddr 10.244.0.0/16 masquerade fully-random',
  ]);
  const plain = masqRules({ network: NET, subnet: SUB, fullyRandom: false });
  t.equal(plain[4], 'ip saddr 10.244.0.0/16 ip daddr != 224.0.0.0/4 masquerade');
  t.notMatch(plain.join('\n'), /fully-random/);
  const script = masqScript({ network: NET, subnet: SUB, fullyRandom: true });
  t.match(script, /^table ip overlayd\ndelete table ip overlayd\ntable ip overlayd \{\n  chain postrouting \{\n    type nat hook postrouting priority srcnat; policy accept;\n/);
  t.equal(script.match(/comment "flanneld masq"/g)?.length, 6, 'every rule carries the comment');
});

t.test('masquerade: fully-random refused by the kernel -> installed without it', async (t) => {
  const { sys, calls } = fakeSystem((_line, stdin) => (stdin?.includes('fully-random') ? { code: 1, stderr: 'Error: Could not process rule: Operation not supported' } : undefined));
  t.same(await installMasq(sys, { network: NET, subnet: SUB, fullyRandom: true }), { fullyRandom: false });
  t.equal(calls.length, 2);
  const ok = fakeSystem();
  t.same(await installMasq(ok.sys, { network: NET, subnet: SUB, fullyRandom: true }), { fullyRandom: true });
  t.equal(ok.calls.length, 1);
});

t.test('masquerade: present only with the whole chain', async (t) => {
  const plan = { network: NET, subnet: SUB, fullyRandom: true };
  const listing = (n: number, extra = 0) => JSON.stringify({
    nftables: [
      { chain: { family: 'ip', table: 'overlayd', name: 'postrouting', handle: 1, type: 'nat', hook: 'postrouting', prio: 100, policy: 'accept' } },
      ...Array.from({ length: n }, (_, i) => ({ rule: { family: 'ip', table: 'overlayd', chain: 'postrouting', handle: 2 + i, comment: 'flanneld masq' } })),
      ...Array.from({ length: extra }, (_, i) => ({ rule: { family: 'ip', table: 'overlayd', chain: 'postrouting', handle: 20 + i } })),
    ],
  });
  t.ok(await masqPresent(fakeSystem(() => ({ stdout: listing(6) })).sys, plan));
  t.notOk(await masqPresent(fakeSystem(() => ({ stdout: listing(5) })).sys, plan), 'a rule missing');
  t.notOk(await masqPresent(fakeSystem(() => ({ stdout: listing(6, 1) })).sys, plan), 'a foreign rule in our chain');
  t.notOk(await masqPresent(fakeSystem(() => ({ code: 1, stderr: 'No such file or directory' })).sys, plan), 'no table');
});

t.test("forward: flanneld's iptables rules", async (t) => {
  t.same(iptablesForwardRules(NET), [
    ['FORWARD', ['-m', 'comment', '--comment', 'flanneld forward', '-j', 'FLANNEL-FWD']],
    ['FLANNEL-FWD', ['-s', '10.244.0.0/16', '-m', 'comment', '--comment', 'flanneld forward', '-j', 'ACCEPT']],
    ['FLANNEL-FWD', ['-d', '10.244.0.0/16', '-m', 'comment', '--comment', 'flanneld forward', '-j', 'ACCEPT']],
  ]);
  const site: ForwardSite = { backend: 'nftables', family: 'inet', table: 'firewalld', chain: 'filter_FORWARD' };
  t.same(nftForwardRules(site, NET), ['saddr', 'daddr'].map((field) => ({
    add: {
      rule: {
        family: 'inet', table: 'firewalld', chain: 'filter_FORWARD', comment: 'overlayd forward',
        expr: [{ match: { op: '==', left: { payload: { protocol: 'ip', field } }, right: { prefix: { addr: '10.244.0.0', len: 16 } } } }, { accept: null }],
      },
    },
  })));
});

t.test('detection: nothing when no table has a drop policy, and no legacy table is created', async (t) => {
  const { sys, calls } = fakeSystem((line) => (line === 'nft -j list chains'
    ? { stdout: chains({ family: 'ip', table: 'filter', name: 'FORWARD', handle: 1, type: 'filter', hook: 'forward', prio: 0, policy: 'accept' }) }
    : undefined));
  t.same(await detectForwardDrops(sys), []);
  t.notOk(calls.some((c) => c.startsWith('iptables-legacy')), 'iptables-legacy not run: its filter table does not exist (listing would create it)');
});

t.test('detection: each backend where its drop is', async (t) => {
  const { sys } = fakeSystem((line) => {
    if (line === 'iptables-legacy -w -t filter -S FORWARD') return { stdout: '-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n' };
    if (line === 'nft -j list chains') {
      return {
        stdout: chains(
          { family: 'ip', table: 'filter', name: 'FORWARD', handle: 1, type: 'filter', hook: 'forward', prio: 0, policy: 'drop' },
          { family: 'ip', table: 'filter', name: 'DOCKER', handle: 2 },
          { family: 'inet', table: 'hostfw', name: 'forward_host', handle: 1, type: 'filter', hook: 'forward', prio: 0, policy: 'drop' },
          { family: 'inet', table: 'other', name: 'fw', handle: 1, type: 'filter', hook: 'forward', prio: 10, policy: 'accept' },
          { family: 'inet', table: 'other', name: 'in', handle: 2, type: 'filter', hook: 'input', prio: 0, policy: 'drop' },
          { family: 'bridge', table: 'br', name: 'fw', handle: 1, type: 'filter', hook: 'forward', prio: 0, policy: 'drop' },
          { family: 'ip6', table: 'six', name: 'fw', handle: 1, type: 'filter', hook: 'forward', prio: 0, policy: 'drop' },
        ),
      };
    }
    return undefined;
  }, { '/proc/net/ip_tables_names': 'nat\nfilter\n' });
  t.same(await detectForwardDrops(sys), [
    { backend: 'iptables-legacy', family: 'ip', table: 'filter', chain: 'FORWARD' },
    { backend: 'iptables-nft', family: 'ip', table: 'filter', chain: 'FORWARD' },
    { backend: 'nftables', family: 'inet', table: 'hostfw', chain: 'forward_host' },
  ]);
});

t.test('detection: iptables names in nft without iptables-nft installed -> changed through nft', async (t) => {
  const { sys } = fakeSystem((line) => {
    if (line === 'iptables-nft --version') return { code: -1, stderr: 'spawn iptables-nft ENOENT' };
    if (line === 'nft -j list chains') return { stdout: chains({ family: 'ip', table: 'filter', name: 'FORWARD', handle: 1, type: 'filter', hook: 'forward', prio: 0, policy: 'drop' }) };
    return undefined;
  });
  t.same(await detectForwardDrops(sys), [{ backend: 'nftables', family: 'ip', table: 'filter', chain: 'FORWARD' }]);
});

t.test('detection: legacy filter table with an accept policy, nft not installed', async (t) => {
  const { sys } = fakeSystem((line) => {
    if (line.startsWith('iptables-legacy')) return { stdout: '-P FORWARD ACCEPT\n' };
    if (line.startsWith('nft')) return { code: -1, stderr: 'spawn nft ENOENT' };
    return undefined;
  }, { '/proc/net/ip_tables_names': 'filter\n' });
  t.same(await detectForwardDrops(sys), []);
});

/** `nft -j list chain` output: one chain and its rules, each rule given as its expr (and comment). */
const chainListing = (family: string, table: string, name: string, policy: string | undefined, rules: Array<{ handle: number; expr: object[]; comment?: string }>) => JSON.stringify({
  nftables: [
    { chain: { family, table, name, handle: 1, ...(policy && { type: 'filter', hook: 'forward', prio: 10, policy }) } },
    ...rules.map((r) => ({ rule: { family, table, chain: name, ...r } })),
  ],
});
const REJECT = { reject: { type: 'icmpx', expr: 'admin-prohibited' } };
const CT_ACCEPT = { match: { op: 'in', left: { ct: { key: 'state' } }, right: ['established', 'related'] } };
const CT_INVALID = { match: { op: 'in', left: { ct: { key: 'state' } }, right: 'invalid' } };

t.test('detection: firewalld-style chains, policy accept, ending in a drop/reject or a jump to one', async (t) => {
  const listings: Record<string, string> = {
    // firewalld's own: the final rule rejects
    'inet firewalld filter_FORWARD': chainListing('inet', 'firewalld', 'filter_FORWARD', 'accept', [
      { handle: 9, expr: [CT_ACCEPT, { accept: null }] },
      { handle: 10, expr: [{ jump: { target: 'filter_FORWARD_ZONES' } }] },
      { handle: 11, expr: [CT_INVALID, { drop: null }] },
      { handle: 12, expr: [REJECT] },
    ]),
    // counted jump to a chain whose last rule is a counted drop
    'inet t2 fw': chainListing('inet', 't2', 'fw', 'accept', [{ handle: 3, expr: [{ counter: { packets: 0, bytes: 0 } }, { goto: { target: 'post' } }] }]),
    'inet t2 post': chainListing('inet', 't2', 'post', undefined, [{ handle: 5, expr: [{ log: { prefix: 'x' } }, { counter: null }, { drop: null }] }]),
    // policy drop with a final reject: before the reject, not after it
    'ip t3 fw': chainListing('ip', 't3', 'fw', 'drop', [{ handle: 4, expr: [REJECT] }]),
    // not terminal: the last drop is conditional; the jump target ends in an accept
    'inet t4 fw': chainListing('inet', 't4', 'fw', 'accept', [{ handle: 2, expr: [CT_INVALID, { drop: null }] }]),
    'inet t5 fw': chainListing('inet', 't5', 'fw', 'accept', [{ handle: 2, expr: [{ jump: { target: 'zones' } }] }]),
    'inet t5 zones': chainListing('inet', 't5', 'zones', undefined, [{ handle: 7, expr: [{ accept: null }] }]),
    // a jump loop is followed a bounded number of times
    'inet t6 fw': chainListing('inet', 't6', 'fw', 'accept', [{ handle: 2, expr: [{ jump: { target: 'loop' } }] }]),
    'inet t6 loop': chainListing('inet', 't6', 'loop', undefined, [{ handle: 3, expr: [{ jump: { target: 'loop' } }] }]),
    // ours appended after the reject by something else: the reject is still found
    'inet t7 fw': chainListing('inet', 't7', 'fw', 'accept', [{ handle: 2, expr: [REJECT] }, { handle: 3, expr: [{ accept: null }], comment: 'overlayd forward' }]),
  };
  const fwd = (family: string, table: string, name: string, policy: string) => ({ family, table, name, handle: 1, type: 'filter', hook: 'forward', prio: 10, policy });
  const { sys, calls } = fakeSystem((line) => {
    if (line === 'nft -j list chains') {
      return { stdout: chains(fwd('inet', 'firewalld', 'filter_FORWARD', 'accept'), fwd('inet', 't2', 'fw', 'accept'), fwd('ip', 't3', 'fw', 'drop'),
        fwd('inet', 't4', 'fw', 'accept'), fwd('inet', 't5', 'fw', 'accept'), fwd('inet', 't6', 'fw', 'accept'), fwd('inet', 't7', 'fw', 'accept')) };
    }
    const m = /^nft -j list chain (\S+ \S+ \S+)$/.exec(line);
    if (m) return listings[m[1]!] ? { stdout: listings[m[1]!] } : { code: 1, stderr: 'No such file or directory' };
    return undefined;
  });
  t.same(await detectForwardDrops(sys), [
    { backend: 'nftables', family: 'inet', table: 'firewalld', chain: 'filter_FORWARD', before: 12 },
    { backend: 'nftables', family: 'inet', table: 't2', chain: 'fw', before: 3 },
    { backend: 'nftables', family: 'ip', table: 't3', chain: 'fw', before: 4 },
    { backend: 'nftables', family: 'inet', table: 't7', chain: 'fw', before: 2 },
  ]);
  t.ok(calls.filter((c) => c === 'nft -j list chain inet t6 loop').length <= 4, 'the jump loop is followed a bounded number of times');
});

t.test('install/present (nftables): before the terminal rule; ours after it count as missing', async (t) => {
  const site: ForwardSite = { backend: 'nftables', family: 'inet', table: 'firewalld', chain: 'filter_FORWARD', before: 12 };
  t.same(nftForwardRules(site, NET).map((c) => Object.keys(c)[0]), ['insert', 'insert']);
  t.match(nftForwardRules(site, NET)[0], { insert: { rule: { handle: 12, comment: 'overlayd forward' } } });
  const ours = (handle: number) => ({ handle, expr: [{ accept: null }], comment: 'overlayd forward' });
  const present = async (rules: Array<{ handle: number; expr: object[]; comment?: string }>) =>
    forwardPresent(fakeSystem(() => ({ stdout: chainListing('inet', 'firewalld', 'filter_FORWARD', 'accept', rules) })).sys, site, NET);
  t.ok(await present([{ handle: 9, expr: [CT_ACCEPT, { accept: null }] }, ours(20), ours(21), { handle: 12, expr: [REJECT] }]), 'both before the reject');
  t.notOk(await present([ours(20), { handle: 12, expr: [REJECT] }, ours(21)]), 'one after the reject');
  t.notOk(await present([ours(20), ours(21), ours(22), { handle: 12, expr: [REJECT] }]), 'a duplicate');
  t.notOk(await present([ours(20), { handle: 12, expr: [REJECT] }]), 'one missing');

  const { sys, calls } = fakeSystem((line) => (line.startsWith('nft -j list chain')
    ? { stdout: chainListing('inet', 'firewalld', 'filter_FORWARD', 'accept', [ours(30), { handle: 12, expr: [REJECT] }]) }
    : undefined));
  await installForward(sys, site, NET);
  const batches = calls.filter((c) => c.startsWith('nft -j {')).map((c) => JSON.parse(c.slice('nft -j '.length)) as { nftables: object[] });
  t.same(batches.map((b) => b.nftables.map((c) => Object.keys(c)[0])), [['delete'], ['insert', 'insert']], 'the stale one deleted, then both inserted');
});

t.test('iptables: a FORWARD chain ending in -j REJECT/-j DROP (policy accept, RHEL-style) gets the jump before it', async (t) => {
  const JUMP = '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD';
  const REJ = '-A FORWARD -j REJECT --reject-with icmp-host-prohibited';
  t.same(iptablesTerminal(`-P FORWARD ACCEPT\n-A FORWARD -p tcp -m tcp --dport 9 -j DROP\n${REJ}\n`), { terminal: 2 });
  t.same(iptablesTerminal(`-P FORWARD ACCEPT\n${JUMP}\n-A FORWARD -j DROP\n`), { jump: 1, terminal: 2 });
  t.same(iptablesTerminal(`-P FORWARD ACCEPT\n${REJ}\n${JUMP}\n`), { jump: 2, terminal: 1 }, 'ours after it: still found');
  t.same(iptablesTerminal('-P FORWARD ACCEPT\n-A FORWARD -i eth9 -j REJECT\n'), {}, 'a conditional reject is not terminal');
  t.same(iptablesTerminal('-P FORWARD ACCEPT\n-A FORWARD -j DOCKER-USER\n'), {});

  let listing = `-P FORWARD ACCEPT\n-A FORWARD -p tcp -m tcp --dport 9 -j DROP\n${REJ}\n`;
  const { sys, calls } = fakeSystem((line) => {
    if (line === 'iptables-legacy -w -t filter -S FORWARD') return { stdout: listing };
    if (line.startsWith('nft')) return { code: -1, stderr: 'spawn nft ENOENT' };
    if (line.includes(' -D FORWARD ')) return { code: 1 };
    return undefined;
  }, { '/proc/net/ip_tables_names': 'filter\n' });
  const [site] = await detectForwardDrops(sys);
  t.same(site, { backend: 'iptables-legacy', family: 'ip', table: 'filter', chain: 'FORWARD', before: 1 });
  await installForward(sys, site!, NET);
  t.equal(calls.at(-1), 'iptables-legacy -w -t filter -I FORWARD 2 -m comment --comment flanneld forward -j FLANNEL-FWD', 'inserted at the REJECT\'s position');
  listing = `-P FORWARD ACCEPT\n${REJ}\n${JUMP}\n`;
  t.notOk(await forwardPresent(sys, site!, NET), 'a jump after the REJECT counts as missing');
  listing = `-P FORWARD ACCEPT\n${JUMP}\n${REJ}\n`;
  t.ok(await forwardPresent(sys, site!, NET), 'before it: present');
});

t.test('install (iptables): chain flushed and filled, duplicate jumps removed, jump appended', async (t) => {
  let dups = 2;
  const { sys, calls } = fakeSystem((line) => {
    if (line.includes(' -N FLANNEL-FWD')) return { code: 1, stderr: 'iptables: Chain already exists.' };
    if (line.includes(' -D FORWARD ')) return dups-- > 0 ? undefined : { code: 1 };
    return undefined;
  });
  await installForward(sys, { backend: 'iptables-nft', family: 'ip', table: 'filter', chain: 'FORWARD' }, NET);
  const c = '-m comment --comment flanneld forward';
  t.same(calls, [
    'iptables-nft -w -t filter -N FLANNEL-FWD',
    'iptables-nft -w -t filter -F FLANNEL-FWD',
    `iptables-nft -w -t filter -A FLANNEL-FWD -s 10.244.0.0/16 ${c} -j ACCEPT`,
    `iptables-nft -w -t filter -A FLANNEL-FWD -d 10.244.0.0/16 ${c} -j ACCEPT`,
    `iptables-nft -w -t filter -D FORWARD ${c} -j FLANNEL-FWD`,
    `iptables-nft -w -t filter -D FORWARD ${c} -j FLANNEL-FWD`,
    `iptables-nft -w -t filter -D FORWARD ${c} -j FLANNEL-FWD`,
    `iptables-nft -w -t filter -A FORWARD ${c} -j FLANNEL-FWD`,
  ]);
});

t.test('install fails: the error names the command', async (t) => {
  const { sys } = fakeSystem((line) => (line.includes('-A FLANNEL-FWD') ? { code: 4, stderr: 'iptables v1.8.9 (legacy): can\'t initialize iptables table `filter\': Permission denied' } : undefined));
  await t.rejects(installForward(sys, { backend: 'iptables-legacy', family: 'ip', table: 'filter', chain: 'FORWARD' }, NET), /iptables-legacy -w -t filter -A FLANNEL-FWD -s 10\.244\.0\.0\/16.*Permission denied/);
});

t.test('remove: only ours, by comment, in every backend; no legacy table touched when absent', async (t) => {
  const ruleset = JSON.stringify({
    nftables: [
      { chain: { family: 'ip', table: 'filter', name: 'FORWARD', handle: 1, type: 'filter', hook: 'forward', policy: 'drop' } },
      { rule: { family: 'inet', table: 'hostfw', chain: 'forward_host', handle: 4, comment: 'overlayd forward' } },
      { rule: { family: 'inet', table: 'hostfw', chain: 'forward_host', handle: 5, comment: 'the host\'s own' } },
      { rule: { family: 'inet', table: 'hostfw', chain: 'forward_host', handle: 6 } },
      { rule: { family: 'inet', table: 'hostfw', chain: 'forward_host', handle: 7, comment: 'overlayd forward' } },
    ],
  });
  let jumps = 1;
  const { sys, calls } = fakeSystem((line) => {
    if (line === 'nft -j list chains' || line === 'nft -j list ruleset') return { stdout: ruleset };
    if (line.includes('-D FORWARD')) return jumps-- > 0 ? undefined : { code: 1 };
    return undefined;
  });
  t.same(await removeAllForward(sys), ['iptables-nft', 'nftables']);
  t.notOk(calls.some((c) => c.startsWith('iptables-legacy')), 'no legacy filter table: iptables-legacy never run');
  const del = calls.find((c) => c.startsWith('nft -j {'));
  t.same(JSON.parse(del!.slice('nft -j '.length)), {
    nftables: [
      { delete: { rule: { family: 'inet', table: 'hostfw', chain: 'forward_host', handle: 4 } } },
      { delete: { rule: { family: 'inet', table: 'hostfw', chain: 'forward_host', handle: 7 } } },
    ],
  });
  t.ok(calls.includes('iptables-nft -w -t filter -X FLANNEL-FWD'));
});

/** A host with an iptables-legacy FORWARD DROP whose rules a test can flush. */
function legacyHost() {
  const state = { installed: false, masq: false, failAppend: false, listings: 0 };
  const fake = fakeSystem((line, stdin) => {
    if (state.failAppend && line.startsWith('iptables-legacy -w -t filter -A')) return { code: 4, stderr: 'iptables: Resource temporarily unavailable.' };
    if (line === 'iptables-legacy -w -t filter -S FORWARD') return { stdout: '-P FORWARD DROP\n' };
    if (line.startsWith('iptables-legacy -w -t filter -C')) return { code: state.installed ? 0 : 1 };
    if (line.startsWith('iptables-legacy -w -t filter -A FORWARD')) state.installed = true;
    if (line.startsWith('iptables-legacy -w -t filter -D FORWARD')) { const was = state.installed; state.installed = false; return { code: was ? 0 : 1 }; }
    if (line.startsWith('nft -j list chains') || line === 'nft -j list ruleset') return { stdout: '{"nftables":[]}' };
    if (line === 'nft list table ip overlayd') return { code: state.masq ? 0 : 1 };
    if (line === 'nft -f -' && stdin !== undefined) state.masq = !stdin.trimEnd().endsWith('delete table ip overlayd');
    // what the periodic check's fingerprint reads: the whole state, with counters that move
    state.listings++;
    if (line === 'nft -j -s list ruleset') return { stdout: `{"nftables":[${state.masq ? '{"table":{"family":"ip","name":"overlayd","handle":9}}' : ''}]}` };
    if (line === 'iptables-legacy-save -t filter') {
      return { stdout: `# Generated by iptables-save on ${new Date().toISOString()}\n*filter\n:FORWARD DROP [${state.listings}:${state.listings * 84}]\n${state.installed ? '-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD\n' : ''}COMMIT\n` };
    }
    return undefined;
  }, { '/proc/net/ip_tables_names': 'filter\n' });
  return { state, ...fake };
}

t.test('Firewall: leftovers removed at start, installed, a flush repaired and counted, all removed at stop', async (t) => {
  const host = legacyHost();
  host.state.installed = true; // a killed instance's rules
  host.state.masq = true; // and its masquerade table, though --ip-masq is now off
  const { logger, lines } = memLogger();
  const fw = new Firewall({ forwardRules: true, ipMasq: false, fullyRandom: true, resyncSeconds: 3600, network: NET, subnet: SUB, logger, sys: host.sys });
  await fw.start();
  const msgs = () => lines.map((l) => String(l['msg']));
  t.ok(msgs().includes('removed FORWARD rules left by a previous instance'));
  t.ok(msgs().includes('removed masquerade rules left by a previous instance (--ip-masq is off)'));
  t.notOk(host.state.masq, 'stale masquerade table deleted');
  t.ok(host.state.installed, 'forward rules installed');
  t.ok(msgs().includes('FORWARD policy is drop; accept rules for the Network installed'));
  t.equal(fw.status().repairs, 0, 'the first install is not a repair');
  t.same(fw.status().forward, [{ backend: 'iptables-legacy', chain: 'ip filter FORWARD', present: true }]);

  await fw.check();
  t.equal(fw.status().repairs, 0, 'nothing missing, nothing repaired');
  host.state.installed = false; // a firewall reload
  await fw.check();
  t.ok(host.state.installed, 'put back');
  t.equal(fw.status().repairs, 1);
  t.equal(fw.repairCount, 1);
  const warn = lines.find((l) => l['msg'] === 'FORWARD accept rules were missing; repaired');
  t.equal(warn?.['level'], 40, 'a repair is logged as a warning');
  t.equal(warn?.['backend'], 'iptables-legacy');

  await fw.stop();
  t.notOk(host.state.installed, 'removed at stop');
  t.same(fw.status().forward, []);
});

t.test('Firewall: a check that fails is logged and kept for status, not thrown', async (t) => {
  const host = legacyHost();
  const { logger, lines } = memLogger();
  const fw = new Firewall({ forwardRules: true, ipMasq: false, fullyRandom: true, resyncSeconds: 3600, network: NET, subnet: SUB, logger, sys: host.sys });
  await fw.start();
  host.state.failAppend = true;
  host.state.installed = false;
  await fw.check();
  t.match(fw.status().lastError, /Resource temporarily unavailable/);
  t.ok(lines.some((l) => l['msg'] === 'firewall check failed'));
  host.state.failAppend = false;
  await fw.check();
  t.equal(fw.status().lastError, null, 'cleared by the next good check');
  await fw.stop();
});

t.test('Firewall: an unchanged firewall is checked with one listing per backend, in full every FULL_CHECK_EVERY periods', async (t) => {
  const host = legacyHost();
  const fw = new Firewall({ forwardRules: true, ipMasq: false, fullyRandom: true, resyncSeconds: 3600, network: NET, subnet: SUB, logger: memLogger().logger, sys: host.sys });
  await fw.start();
  await fw.check(); // the first periodic check: full, vouches for the fingerprint
  t.ok(host.calls.some((c) => c.includes('-C FORWARD')), 'the first check is a full one');
  const counted = host.calls.length;
  await fw.check();
  t.same(host.calls.slice(counted), ['nft -j -s list ruleset', 'iptables-legacy-save -t filter'], 'nothing changed (counters aside): two listings, nothing else');
  host.state.installed = false; // a firewall reload
  await fw.check();
  t.ok(host.state.installed, 'a changed fingerprint: the full check finds the rules missing and puts them back');
  t.equal(fw.status().repairs, 1);
  await fw.check(); // full again: the repair does not vouch for the fingerprint taken before it
  let cheap = 0;
  for (let i = 0; i < FULL_CHECK_EVERY; i++) {
    const before = host.calls.length;
    await fw.check();
    if (host.calls.length - before === 2) cheap++;
  }
  t.equal(cheap, FULL_CHECK_EVERY - 1, 'one full check among FULL_CHECK_EVERY unchanged periods');
  t.equal(fw.status().lastError, null);
  await fw.stop();
});

t.test('Firewall: no forward site: the full check (one listing) without a digest', async (t) => {
  const { sys, calls } = fakeSystem((line) => (line.startsWith('nft -j list chains') ? { stdout: '{"nftables":[]}' } : undefined));
  const fw = new Firewall({ forwardRules: true, ipMasq: false, fullyRandom: true, resyncSeconds: 3600, network: NET, subnet: SUB, logger: memLogger().logger, sys });
  await fw.start();
  const before = calls.length;
  await fw.check();
  await fw.check();
  t.same(calls.slice(before), ['nft -j list chains', 'nft -j list chains'], 'one listing per check, no ruleset dump');
  await fw.stop();
});

t.test('Firewall: no fingerprint (nft fails): every check is a full one', async (t) => {
  const host = legacyHost();
  const sys: FirewallSystem = {
    run: (cmd, args, stdin) => (cmd === 'nft' && args.includes('-s') ? Promise.resolve({ code: 1, stdout: '', stderr: 'Error: Could not process rule: Operation not permitted' }) : host.sys.run(cmd, args, stdin)),
    readFile: (path) => host.sys.readFile(path),
  };
  const fw = new Firewall({ forwardRules: true, ipMasq: false, fullyRandom: true, resyncSeconds: 3600, network: NET, subnet: SUB, logger: memLogger().logger, sys });
  await fw.start();
  for (let i = 0; i < 3; i++) {
    const before = host.calls.filter((c) => c.includes('-C FORWARD')).length;
    await fw.check();
    t.ok(host.calls.filter((c) => c.includes('-C FORWARD')).length > before, `check ${i + 1} is a full one`);
  }
  await fw.stop();
});

t.test('Firewall: --ip-masq installs and repairs the table; --iptables-forward-rules=false installs no forward rule', async (t) => {
  const host = legacyHost();
  const { logger } = memLogger();
  const fw = new Firewall({ forwardRules: false, ipMasq: true, fullyRandom: true, resyncSeconds: 3600, network: NET, subnet: SUB, logger, sys: host.sys });
  await fw.start();
  t.ok(host.state.masq);
  t.notOk(host.state.installed, 'no forward rules');
  t.notOk(host.calls.some((c) => c.includes('-S FORWARD')), 'no detection either');
  host.state.masq = false;
  await fw.check(); // masqPresent reads `nft -j list table`, which this fake answers with an empty listing
  t.equal(fw.status().repairs, 1);
  t.ok(host.state.masq);
  t.same(fw.status().masq, { enabled: true, present: true, fullyRandom: true });
  await fw.stop();
  t.notOk(host.state.masq, 'table deleted at stop');
});

t.test("flags: flanneld's names and defaults, OVERLAYD_* variables, bad values named", async (t) => {
  const cfg = (argv: string[], env: NodeJS.ProcessEnv = {}): Config => {
    const r = parseDaemonArgs(argv, env);
    if (r.kind !== 'daemon') throw new Error('not a daemon command');
    return r.config;
  };
  const d = cfg([]);
  t.same([d.iptablesForwardRules, d.iptablesResync, d.ipMasqFullyRandomDisable], [true, 5, false], 'defaults as flanneld');
  t.equal(cfg(['--iptables-forward-rules=false']).iptablesForwardRules, false);
  t.equal(cfg(['--iptables-forward-rules=true']).iptablesForwardRules, true);
  t.equal(cfg(['-iptables-forward-rules']).iptablesForwardRules, true);
  t.equal(cfg([], { OVERLAYD_IPTABLES_FORWARD_RULES: 'false' }).iptablesForwardRules, false);
  t.equal(cfg(['--iptables-resync', '30']).iptablesResync, 30);
  t.equal(cfg([], { OVERLAYD_IPTABLES_RESYNC: '2' }).iptablesResync, 2);
  t.equal(cfg(['--ip-masq-fully-random-disable']).ipMasqFullyRandomDisable, true);
  t.equal(cfg([], { OVERLAYD_IP_MASQ_FULLY_RANDOM_DISABLE: 'true' }).ipMasqFullyRandomDisable, true);
  for (const bad of ['0', '3601']) {
    t.throws(() => cfg([`--iptables-resync=${bad}`]), /--iptables-resync: \d+ is out of range: 1s\.\.1h/, `--iptables-resync ${JSON.stringify(bad)}`);
  }
  for (const bad of ['-1', '']) {
    t.throws(() => cfg([`--iptables-resync=${bad}`]), /--iptables-resync: ".*" is not a duration/, `--iptables-resync ${JSON.stringify(bad)}`);
  }
  t.throws(() => cfg(['--iptables-forward-rules=maybe']), /--iptables-forward-rules: "maybe" is not a boolean/);
  t.throws(() => cfg([], { OVERLAYD_IPTABLES_FORWARD_RULES: 'maybe' }), /--iptables-forward-rules \(OVERLAYD_IPTABLES_FORWARD_RULES\): "maybe" is not a boolean/);
});
