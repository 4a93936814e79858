/**
 * The dual-stack firewall against real tools (root only): in a fresh namespace per flavour
 * whose IPv6 FORWARD path drops (ip6tables-legacy policy DROP, ip6tables-nft policy DROP, a
 * native `inet` table of the host's own), the daemon's Firewall with IPv6Network installs
 * flanneld's ip6tables rules (or our native ip6 accepts) and the `ip6 overlayd` masquerade
 * table, repairs them after a flush, and removes exactly its own at stop, leaving the host's
 * rules. Driven through fixtures/firewall6.js (the Firewall class, no data plane).
 */
import t from 'tap';
import * as path from 'node:path';
import * as readline from 'node:readline';
import { spawn } from 'node:child_process';
import { isRoot } from '../helpers/exec';
import { NetnsSet } from '../../src/lab/netns';
import type { FirewallStatus } from '../../src/net/firewall';

const FIXTURE = path.resolve(__dirname, 'fixtures', 'firewall6.js');
const NET6 = 'fd00:10:244::/56';

interface Flavour {
  readonly name: string;
  readonly backend: 'iptables-legacy' | 'iptables-nft' | 'nftables';
  readonly setup: string[][];
  /** command whose stdout shows our IPv6 accepts */
  readonly ours: string[];
  readonly oursRe: RegExp;
  /** the host's own rule, which must survive */
  readonly hostRe: RegExp;
  readonly hostCmd: string[];
  /** what a firewall reload does to our rules */
  readonly flush: string[][];
  /** repairs the flush causes, the masquerade table included (an inet chain is a site of both families) */
  readonly repairs: number;
}

const FLAVOURS: Flavour[] = [
  {
    name: 'ip6tables-legacy', backend: 'iptables-legacy',
    setup: [['ip6tables-legacy', '-w', '-P', 'FORWARD', 'DROP'], ['ip6tables-legacy', '-w', '-A', 'FORWARD', '-p', 'tcp', '--dport', '9', '-j', 'DROP']],
    ours: ['ip6tables-legacy', '-w', '-S'], oursRe: new RegExp(`-A FLANNEL-FWD -s ${NET6} -m comment --comment "flanneld forward" -j ACCEPT`),
    hostCmd: ['ip6tables-legacy', '-w', '-S', 'FORWARD'], hostRe: /-A FORWARD -p tcp -m tcp --dport 9 -j DROP/,
    flush: [['ip6tables-legacy', '-w', '-F', 'FLANNEL-FWD']], repairs: 2,
  },
  {
    name: 'ip6tables-nft', backend: 'iptables-nft',
    setup: [['ip6tables-nft', '-w', '-P', 'FORWARD', 'DROP'], ['ip6tables-nft', '-w', '-A', 'FORWARD', '-p', 'tcp', '--dport', '9', '-j', 'DROP']],
    ours: ['ip6tables-nft', '-w', '-S'], oursRe: new RegExp(`-A FLANNEL-FWD -d ${NET6} -m comment --comment "flanneld forward" -j ACCEPT`),
    hostCmd: ['ip6tables-nft', '-w', '-S', 'FORWARD'], hostRe: /-A FORWARD -p tcp -m tcp --dport 9 -j DROP/,
    flush: [['ip6tables-nft', '-w', '-F', 'FLANNEL-FWD']], repairs: 2,
  },
  {
    name: 'native inet table', backend: 'nftables',
    setup: [['nft', 'add', 'table', 'inet', 'hostfw'], ['nft', 'add chain inet hostfw forward_host { type filter hook forward priority 0; policy drop; }'], ['nft', 'add rule inet hostfw forward_host tcp dport 9 drop']],
    ours: ['nft', 'list', 'chain', 'inet', 'hostfw', 'forward_host'], oursRe: new RegExp(`ip6 saddr ${NET6} accept comment "overlayd forward ipv6"`),
    hostCmd: ['nft', 'list', 'chain', 'inet', 'hostfw', 'forward_host'], hostRe: /tcp dport 9 drop/,
    flush: [['nft', 'flush', 'chain', 'inet', 'hostfw', 'forward_host'], ['nft', 'add rule inet hostfw forward_host tcp dport 9 drop']], repairs: 3,
  },
];

if (!isRoot) {
  t.skip('SKIP: e2e IPv6 firewall test needs root (network namespaces, ip6tables, nft)', () => undefined);
} else {
  const netns = new NetnsSet('ofw6');
  t.teardown(() => netns.cleanup());
  for (const [i, f] of FLAVOURS.entries()) {
    t.test(`IPv6 FORWARD drop: ${f.name}`, async (t) => {
      const ns = netns.add(`fw${i}`);
      for (const c of f.setup) netns.exec(ns, c[0]!, c.slice(1));
      const child = spawn('ip', ['netns', 'exec', ns, process.execPath, FIXTURE], { stdio: ['pipe', 'pipe', 'pipe'] });
      const killer = setTimeout(() => child.kill('SIGKILL'), 120_000);
      const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
      t.teardown(async () => { child.stdin.end(); await exited; clearTimeout(killer); });
      const lines: string[] = [];
      readline.createInterface({ input: child.stdout }).on('line', (l) => lines.push(l));
      let stderr = '';
      child.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
      const ask = async (cmd: string): Promise<FirewallStatus> => {
        const n = lines.length;
        child.stdin.write(`${cmd}\n`);
        for (let i = 0; i < 600 && lines.length === n; i++) await new Promise((r) => setTimeout(r, 100));
        const l = lines[n];
        if (l === undefined || !l.startsWith('STATUS ')) throw new Error(`${cmd}: ${l ?? 'no answer'} ${stderr}`);
        return JSON.parse(l.slice('STATUS '.length)) as FirewallStatus;
      };
      const out = (c: string[]) => netns.exec(ns, c[0]!, c.slice(1));

      const st = await ask('start');
      t.same(st.forward.filter((s) => s.ipv6 === true).map((s) => [s.backend, s.present]), [[f.backend, true]], 'the IPv6 site found and filled');
      t.match(out(f.ours), f.oursRe, 'our IPv6 accepts are in place');
      const masq = out(['nft', 'list', 'table', 'ip6', 'overlayd']);
      t.match(masq, new RegExp(`ip6 saddr ${NET6} ip6 daddr != ff00::/8 .*masquerade.* comment "flanneld masq"`), 'ip6 masquerade table loaded by the real nft');
      t.equal(masq.match(/comment "flanneld masq"/g)?.length, 6, 'all six masquerade rules');
      t.same(st.masq, { enabled: true, present: true, fullyRandom: st.masq.fullyRandom });

      for (const c of f.flush) out(c);
      out(['nft', 'delete', 'table', 'ip6', 'overlayd']);
      const st2 = await ask('check');
      t.equal(st2.lastError, null, 'check succeeded');
      t.equal(st2.repairs, f.repairs, 'forward rules and masquerade table repaired');
      t.match(out(f.ours), f.oursRe, 'accepts back');
      t.match(out(['nft', 'list', 'table', 'ip6', 'overlayd']), /flanneld masq/, 'masquerade table back');

      await ask('stop');
      t.notMatch(out(f.ours), /flanneld forward|overlayd forward/, 'ours removed at stop');
      t.match(out(f.hostCmd), f.hostRe, "the host's own rule kept");
      t.not(netns.tryExec(ns, 'nft', ['list', 'table', 'ip6', 'overlayd']).status, 0, 'ip6 masquerade table deleted');
      t.not(netns.tryExec(ns, 'nft', ['list', 'table', 'ip', 'overlayd']).status, 0, 'ip masquerade table deleted');
    });
  }
}
