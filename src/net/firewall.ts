/**
 * The daemon's firewall state (IPv4, this network namespace): FORWARD accept rules for the
 * Network (--iptables-forward-rules, flanneld's rule set) and the masquerade table
 * (--ip-masq, masq.ts).
 *
 * FORWARD: a packet is forwarded only when every base chain on the forward hook accepts
 * it, so an accept in a table of our own does not override another table's drop. The
 * accepts go where the drop is. Each check finds every forward-hook base chain that drops
 * what it does not accept:
 *   iptables-legacy  filter FORWARD with policy drop or a terminal last rule (`-j DROP`,
 *                    `-j REJECT [--reject-with X]`, nothing else on the rule) (only when the
 *                    legacy filter table exists, per /proc/net/ip_tables_names: listing it
 *                    would create it)
 *   iptables-nft     nft's `ip filter FORWARD`, the same way, changed through iptables-nft
 *                    so that the host's iptables tools keep understanding the table (through
 *                    nft, as below, when iptables-nft is not installed)
 *   nftables         any other forward base chain of family ip/inet whose policy is drop or
 *                    whose last rule is terminal: an unconditional drop/reject (counter/log
 *                    statements aside), or an unconditional jump/goto to a chain of the same
 *                    table whose last rule is terminal (firewalld's `inet firewalld
 *                    filter_FORWARD`, policy accept, ends in `reject with icmpx
 *                    admin-prohibited`)
 * iptables flavours get flanneld's rules: chain FLANNEL-FWD with `-s <Network> -j ACCEPT`
 * and `-d <Network> -j ACCEPT`, reached by `-A FORWARD -j FLANNEL-FWD`, all with the comment
 * "flanneld forward" (the jump inserted right before a terminal last rule, else appended).
 * A native nftables chain gets `ip saddr <Network> accept` and
 * `ip daddr <Network> accept` with the comment "overlayd forward" (so that only ours are ever
 * removed): inserted right before its terminal rule when it has one, else appended. As
 * flanneld does, the host's own rules before them keep their effect; only the final drop is
 * overridden for the Network.
 *
 * Lifecycle (JS main thread): start() removes whatever a previous instance left (both rule
 * sets, in every backend) and installs what the flags ask; every --iptables-resync seconds
 * check() re-detects and repairs (a firewall reload, a Docker restart), logging each repair;
 * stop() removes ours where it put them, leaving the host's rules and policies untouched.
 *
 * The periodic check is cheap while nothing changes: where a forward site was found (the full
 * check then runs several commands per site, each iptables-nft one reading its whole table),
 * it first takes a fingerprint of the whole firewall (rulesetFingerprint: one `nft -j -s list ruleset`, plus
 * `iptables-legacy-save -t filter` where a legacy filter table exists), and runs the full
 * detection (several commands per site) only when the fingerprint differs from the one taken
 * before the last full check that found everything in place and changed nothing; and at the
 * latest every FULL_CHECK_EVERY periods (what the fingerprint might not show: an iptables-nft
 * match's parameters, which nft prints without them). Measured on an idle daemon with
 * iptables-nft FORWARD policy drop and --ip-masq (bench/idle-probe.ts --forward-drop):
 * 7 commands per period before, 1 after.
 *
 * Dual-stack (FirewallOptions.ipv6): the same for IPv6Network, as flanneld does with
 * ip6tables: ip6tables-legacy (when /proc/net/ip6_tables_names lists filter), ip6tables-nft
 * (nft's `ip6 filter FORWARD`) get chain FLANNEL-FWD with the same rules; native forward
 * chains of family ip6/inet get `ip6 saddr/daddr <IPv6Network> accept` with the comment
 * "overlayd forward ipv6"; the masquerade table `ip6 overlayd` (masq.ts). IPv6 sites are
 * marked `ipv6` (an inet chain may be a site of both families).
 */
import { formatPrefix, type Prefix } from './addr';
import { formatPrefix6, type Prefix6 } from './addr6';
import { mustRun, parseNftJson, type FirewallSystem, type NftListing, type NftRule, systemFirewall } from './fwexec';
import { installMasq, masqPresent, removeMasq, MASQ_TABLE, type MasqFamily, type MasqPlan, type MasqPlan6 } from './masq';
import { createHash } from 'node:crypto';
import { errorMessage } from '../errors';
import type { Logger } from '../ops/log';

export const FWD_CHAIN = 'FLANNEL-FWD';
export const FWD_COMMENT = 'flanneld forward';
export const NFT_FWD_COMMENT = 'overlayd forward';
/** the comment of our native nftables accepts for IPv6Network */
export const NFT_FWD_COMMENT6 = 'overlayd forward ipv6';
/** the periodic check runs in full at least every this many periods, even with an unchanged fingerprint */
export const FULL_CHECK_EVERY = 12;
/** bound on the deletions of duplicated jump rules */
const MAX_DUPLICATES = 32;

export type ForwardBackend = 'iptables-legacy' | 'iptables-nft' | 'nftables';
const IPTABLES_BIN: Record<Exclude<ForwardBackend, 'nftables'>, string> = { 'iptables-legacy': 'iptables-legacy', 'iptables-nft': 'iptables-nft' };
const IP6TABLES_BIN: Record<Exclude<ForwardBackend, 'nftables'>, string> = { 'iptables-legacy': 'ip6tables-legacy', 'iptables-nft': 'ip6tables-nft' };

function iptablesBin(backend: Exclude<ForwardBackend, 'nftables'>, ipv6: boolean | undefined): string {
  return (ipv6 === true ? IP6TABLES_BIN : IPTABLES_BIN)[backend];
}

/** An IPv4 or (dual-stack) IPv6 network; the rules follow its family. */
export type AnyPrefix = Prefix | Prefix6;

function isPrefix6(p: AnyPrefix): p is Prefix6 {
  return typeof p.addr === 'bigint';
}

function prefixText(p: AnyPrefix): string {
  return isPrefix6(p) ? formatPrefix6(p) : formatPrefix(p);
}

/** A forward-hook base chain that drops what it does not accept. */
export interface ForwardSite {
  readonly backend: ForwardBackend;
  readonly family: string;
  readonly table: string;
  readonly chain: string;
  /**
   * The chain's terminal rule, our accepts go right before it (absent: appended, policy drop):
   * nftables its handle; iptables 1 (its position is looked up again when installing).
   */
  readonly before?: number;
  /** a site for IPv6Network (ip6tables, or an ip6/inet chain) */
  readonly ipv6?: boolean;
}

export function siteName(s: ForwardSite): string {
  return `${s.backend} ${s.family} ${s.table} ${s.chain}${s.ipv6 === true ? ' ipv6' : ''}`;
}

/** flanneld's forwardRules(): [chain, rulespec] for iptables. */
export function iptablesForwardRules(network: AnyPrefix): Array<[string, string[]]> {
  const net = prefixText(network);
  const c = ['-m', 'comment', '--comment', FWD_COMMENT];
  return [
    ['FORWARD', [...c, '-j', FWD_CHAIN]],
    [FWD_CHAIN, ['-s', net, ...c, '-j', 'ACCEPT']],
    [FWD_CHAIN, ['-d', net, ...c, '-j', 'ACCEPT']],
  ];
}

/**
 * The nft JSON commands that put the two accepts into a native chain, appended or (site.before)
 * inserted before the terminal rule (given to `nft -j` as one argument: nft's JSON mode cannot
 * read a piped stdin).
 */
export function nftForwardRules(site: ForwardSite, network: AnyPrefix): object[] {
  const verb = site.before === undefined ? 'add' : 'insert';
  const v6 = isPrefix6(network);
  const match = (field: 'saddr' | 'daddr') => ({
    [verb]: {
      rule: {
        family: site.family, table: site.table, chain: site.chain, comment: v6 ? NFT_FWD_COMMENT6 : NFT_FWD_COMMENT,
        ...(site.before !== undefined && { handle: site.before }),
        expr: [
          { match: { op: '==', left: { payload: { protocol: v6 ? 'ip6' : 'ip', field } }, right: { prefix: { addr: prefixText(network).split('/')[0], len: network.len } } } },
          { accept: null },
        ],
      },
    },
  });
  return [match('saddr'), match('daddr')];
}

async function legacyFilterExists(sys: FirewallSystem, ipv6 = false): Promise<boolean> {
  const names = await sys.readFile(ipv6 ? '/proc/net/ip6_tables_names' : '/proc/net/ip_tables_names');
  return names !== undefined && names.split('\n').some((l) => l.trim() === 'filter');
}

async function nftChains(sys: FirewallSystem): Promise<NftListing | undefined> {
  const r = await sys.run('nft', ['-j', 'list', 'chains']);
  return r.code === 0 ? parseNftJson(r.stdout) : undefined;
}

const isIptablesNft = (c: { family: string; table: string; name: string }, ipv6 = false) => c.family === (ipv6 ? 'ip6' : 'ip') && c.table === 'filter' && c.name === 'FORWARD';

/** An iptables FORWARD rule that drops everything reaching it. */
const IPTABLES_TERMINAL = /^-A FORWARD -j (DROP|REJECT( --reject-with \S+)?)$/;

/**
 * In `iptables -S FORWARD` output: the 1-based position of the chain's last rule other than
 * ours when it is terminal, else undefined; and the position of our jump (undefined: none).
 */
export function iptablesTerminal(listing: string): { terminal?: number; jump?: number } {
  const rules = listing.split('\n').map((l) => l.trim()).filter((l) => l.startsWith('-A FORWARD '));
  const ours = (l: string) => l.includes(FWD_COMMENT) && l.endsWith(`-j ${FWD_CHAIN}`);
  const out: { terminal?: number; jump?: number } = {};
  const j = rules.findIndex(ours);
  if (j >= 0) out.jump = j + 1;
  for (let i = rules.length - 1; i >= 0; i--) {
    if (ours(rules[i]!)) continue;
    if (IPTABLES_TERMINAL.test(rules[i]!)) out.terminal = i + 1;
    break;
  }
  return out;
}

/** An iptables flavour's FORWARD site: policy drop (appended), or a terminal last rule (before: 1), or none. */
async function iptablesSite(sys: FirewallSystem, backend: Exclude<ForwardBackend, 'nftables'>, policyDrop?: boolean, ipv6 = false): Promise<ForwardSite | undefined> {
  const r = await sys.run(iptablesBin(backend, ipv6), ['-w', '-t', 'filter', '-S', 'FORWARD']);
  if (r.code !== 0) return undefined;
  const site = ipv6 ? { backend, family: 'ip6', table: 'filter', chain: 'FORWARD', ipv6 } : { backend, family: 'ip', table: 'filter', chain: 'FORWARD' };
  if (iptablesTerminal(r.stdout).terminal !== undefined) return { ...site, before: 1 };
  return (policyDrop ?? /^-P FORWARD DROP$/m.test(r.stdout)) ? site : undefined;
}

/** Statements that neither match nor decide: a rule made of these and one verdict is unconditional. */
const NEUTRAL_STATEMENTS = new Set(['counter', 'log']);
/** bound on the jump/goto chain followed from a forward chain's last rule */
const MAX_JUMP_DEPTH = 4;

async function listNftChain(sys: FirewallSystem, family: string, table: string, chain: string): Promise<NftListing | undefined> {
  const r = await sys.run('nft', ['-j', 'list', 'chain', family, table, chain]);
  return r.code === 0 ? parseNftJson(r.stdout) : undefined;
}

/**
 * Whether a rule drops everything that reaches it: an unconditional drop/reject, or an
 * unconditional jump/goto to a chain (same table) whose last rule does, followed at most
 * `depth` levels.
 */
async function isTerminal(sys: FirewallSystem, rule: NftRule, depth: number): Promise<boolean> {
  const verdicts = (rule.expr ?? []).filter((e) => !Object.keys(e).every((k) => NEUTRAL_STATEMENTS.has(k)));
  if (verdicts.length !== 1) return false;
  const v = verdicts[0]!;
  if ('drop' in v || 'reject' in v) return true;
  const to = (v['jump'] ?? v['goto']) as { target?: unknown } | undefined;
  if (typeof to?.target !== 'string' || depth <= 0) return false;
  const last = (await listNftChain(sys, rule.family, rule.table, to.target))?.rules.at(-1);
  return last !== undefined && isTerminal(sys, last, depth - 1);
}

/**
 * Every forward-hook base chain that drops what it does not accept (policy drop, or a
 * terminal last rule in a native nftables chain), in the order legacy, iptables-nft, nftables.
 * `ipv6`: the chains that filter IPv6 (ip6tables, families ip6 and inet), sites marked ipv6.
 */
export async function detectForwardDrops(sys: FirewallSystem, ipv6 = false): Promise<ForwardSite[]> {
  const sites: ForwardSite[] = [];
  if (await legacyFilterExists(sys, ipv6)) {
    const legacy = await iptablesSite(sys, 'iptables-legacy', undefined, ipv6);
    if (legacy) sites.push(legacy);
  }
  const listing = await nftChains(sys);
  for (const c of listing?.chains ?? []) {
    if (c.hook !== 'forward' || (c.family !== (ipv6 ? 'ip6' : 'ip') && c.family !== 'inet')) continue;
    const site = { family: c.family, table: c.table, chain: c.name, ...(ipv6 && { ipv6 }) };
    // iptables' names: changed through iptables-nft when installed, else an nftables chain like any other
    if (isIptablesNft(c, ipv6) && (await sys.run(iptablesBin('iptables-nft', ipv6), ['--version'])).code === 0) {
      const nft = await iptablesSite(sys, 'iptables-nft', c.policy === 'drop', ipv6);
      if (nft) sites.push(nft);
      continue;
    }
    // ours (either family) skipped: accepts appended to a policy-drop chain, or left after a terminal rule
    const last = (await listNftChain(sys, c.family, c.table, c.name))?.rules.filter((x) => x.comment !== NFT_FWD_COMMENT && x.comment !== NFT_FWD_COMMENT6).at(-1);
    if (last !== undefined && await isTerminal(sys, last, MAX_JUMP_DEPTH)) sites.push({ backend: 'nftables', ...site, before: last.handle });
    else if (c.policy === 'drop') sites.push({ backend: 'nftables', ...site });
  }
  return sites;
}

/** True when all of our accepts are in place at the site. */
export async function forwardPresent(sys: FirewallSystem, site: ForwardSite, network: AnyPrefix): Promise<boolean> {
  if (site.backend === 'nftables') {
    const rules = (await listNftChain(sys, site.family, site.table, site.chain))?.rules;
    if (rules === undefined) return false;
    const comment = site.ipv6 === true ? NFT_FWD_COMMENT6 : NFT_FWD_COMMENT;
    const ours = rules.flatMap((x, i) => (x.comment === comment ? [i] : []));
    if (ours.length !== 2) return false;
    // a terminal rule: ours must come before it (a rule appended after it is never reached)
    const end = site.before === undefined ? rules.length : rules.findIndex((x) => x.handle === site.before);
    return ours.every((i) => i < end);
  }
  const bin = iptablesBin(site.backend, site.ipv6);
  for (const [chain, spec] of iptablesForwardRules(network)) {
    if ((await sys.run(bin, ['-w', '-t', 'filter', '-C', chain, ...spec])).code !== 0) return false;
  }
  if (site.before === undefined) return true;
  // a terminal rule: our jump must come before it
  const r = await sys.run(bin, ['-w', '-t', 'filter', '-S', 'FORWARD']);
  const at = iptablesTerminal(r.stdout);
  return r.code === 0 && at.jump !== undefined && (at.terminal === undefined || at.jump < at.terminal);
}

/**
 * Deletes the native nftables rules carrying our comment (of IPv6Network's when `ipv6`, or
 * `only`'s family); `only` restricts it to one chain. Resolves how many.
 */
async function removeNftForward(sys: FirewallSystem, only?: ForwardSite, ipv6 = false): Promise<number> {
  const args = only ? ['-j', 'list', 'chain', only.family, only.table, only.chain] : ['-j', 'list', 'ruleset'];
  const r = await sys.run('nft', args);
  if (r.code !== 0) return 0;
  const comment = (only?.ipv6 ?? ipv6) === true ? NFT_FWD_COMMENT6 : NFT_FWD_COMMENT;
  const ours = parseNftJson(r.stdout).rules.filter((x) => x.comment === comment);
  if (ours.length === 0) return 0;
  const batch = ours.map((x) => ({ delete: { rule: { family: x.family, table: x.table, chain: x.chain, handle: x.handle } } }));
  await mustRun(sys, 'nft', ['-j', JSON.stringify({ nftables: batch })]);
  return ours.length;
}

/** Removes the jump(s) and FLANNEL-FWD from one iptables flavour. Resolves how many rules/chains went. */
async function removeIptablesForward(sys: FirewallSystem, bin: string): Promise<number> {
  let removed = 0;
  const jump = ['-m', 'comment', '--comment', FWD_COMMENT, '-j', FWD_CHAIN];
  for (let i = 0; i < MAX_DUPLICATES && (await sys.run(bin, ['-w', '-t', 'filter', '-D', 'FORWARD', ...jump])).code === 0; i++) removed++;
  if ((await sys.run(bin, ['-w', '-t', 'filter', '-F', FWD_CHAIN])).code === 0) {
    await sys.run(bin, ['-w', '-t', 'filter', '-X', FWD_CHAIN]);
    removed++;
  }
  return removed;
}

/** (Re)installs our accepts at one site: what is there of ours first goes, then all of it, in order. */
export async function installForward(sys: FirewallSystem, site: ForwardSite, network: AnyPrefix): Promise<void> {
  if (site.backend === 'nftables') {
    await removeNftForward(sys, site);
    await mustRun(sys, 'nft', ['-j', JSON.stringify({ nftables: nftForwardRules(site, network) })]);
    return;
  }
  const bin = iptablesBin(site.backend, site.ipv6);
  const ipt = (args: string[]) => mustRun(sys, bin, ['-w', '-t', 'filter', ...args]);
  await sys.run(bin, ['-w', '-t', 'filter', '-N', FWD_CHAIN]); // exists already: fine, flushed next
  await ipt(['-F', FWD_CHAIN]);
  const [jump, ...accepts] = iptablesForwardRules(network);
  for (const [chain, spec] of accepts) await ipt(['-A', chain, ...spec]);
  for (let i = 0; i < MAX_DUPLICATES && (await sys.run(bin, ['-w', '-t', 'filter', '-D', 'FORWARD', ...jump![1]])).code === 0; i++);
  const terminal = site.before === undefined ? undefined : iptablesTerminal(await ipt(['-S', 'FORWARD'])).terminal;
  await ipt(terminal === undefined ? ['-A', 'FORWARD', ...jump![1]] : ['-I', 'FORWARD', String(terminal), ...jump![1]]);
}

/**
 * A digest of every rule that decides where our rules must be and whether they are there:
 * the nftables ruleset without stateful data (`nft -j -s`: no counters, so traffic does not
 * change it; iptables-nft's tables are part of it), the legacy table lists, and the legacy
 * filter tables (counters and comment lines removed). `ipv6`: ip6tables-legacy's too.
 * Undefined when a listing fails (the caller then checks in full).
 */
export async function rulesetFingerprint(sys: FirewallSystem, ipv6 = false): Promise<string | undefined> {
  const hash = createHash('sha256');
  const nft = await sys.run('nft', ['-j', '-s', 'list', 'ruleset']);
  if (nft.code !== 0) return undefined;
  hash.update(nft.stdout);
  for (const v6 of ipv6 ? [false, true] : [false]) {
    const names = await sys.readFile(v6 ? '/proc/net/ip6_tables_names' : '/proc/net/ip_tables_names');
    hash.update(`\0${names ?? ''}\0`);
    if (!(await legacyFilterExists(sys, v6))) continue;
    const save = await sys.run(v6 ? 'ip6tables-legacy-save' : 'iptables-legacy-save', ['-t', 'filter']);
    if (save.code !== 0) return undefined;
    hash.update(save.stdout.split('\n').filter((l) => !l.startsWith('#')).map((l) => l.replace(/ \[\d+:\d+\]$/, '')).join('\n'));
  }
  return hash.digest('hex');
}

/**
 * Removes our FORWARD rules from every backend, whoever installed them (this process or a
 * crashed one). Never creates a table: iptables-legacy only when its filter table exists,
 * iptables-nft only when nft shows `ip filter`. Resolves the backends where something went.
 */
export async function removeAllForward(sys: FirewallSystem, ipv6 = false): Promise<ForwardBackend[]> {
  const out: ForwardBackend[] = [];
  if (await legacyFilterExists(sys, ipv6) && await removeIptablesForward(sys, iptablesBin('iptables-legacy', ipv6)) > 0) out.push('iptables-legacy');
  const listing = await nftChains(sys);
  if (listing?.chains.some((c) => c.family === (ipv6 ? 'ip6' : 'ip') && c.table === 'filter') && await removeIptablesForward(sys, iptablesBin('iptables-nft', ipv6)) > 0) out.push('iptables-nft');
  if (listing !== undefined && await removeNftForward(sys, undefined, ipv6) > 0) out.push('nftables');
  return out;
}

async function masqTableExists(sys: FirewallSystem, family: MasqFamily = 'ip'): Promise<boolean> {
  return (await sys.run('nft', ['list', 'table', family, MASQ_TABLE])).code === 0;
}

/**
 * What a previous instance may have left (a kill -9): our FORWARD rules in every backend, and
 * the masquerade table unless --ip-masq is on (then start() replaces it). Each removal logged.
 * Needs no lease: the daemon runs it as soon as it holds the instance lock.
 */
export async function removeLeftovers(opts: { ipMasq: boolean; logger: Logger; sys?: FirewallSystem; ipv6?: boolean }): Promise<void> {
  const sys = opts.sys ?? systemFirewall;
  const stale = await removeAllForward(sys);
  if (stale.length > 0) opts.logger.info({ backends: stale }, 'removed FORWARD rules left by a previous instance');
  if (!opts.ipMasq && await masqTableExists(sys)) {
    await removeMasq(sys);
    opts.logger.info({ table: `ip ${MASQ_TABLE}` }, 'removed masquerade rules left by a previous instance (--ip-masq is off)');
  }
  // IPv6 leftovers only with IPv6 on (an IPv4-only node runs no ip6tables/ip6 command)
  if (opts.ipv6 !== true) return;
  const stale6 = await removeAllForward(sys, true);
  if (stale6.length > 0) opts.logger.info({ backends: stale6, ipv6: true }, 'removed IPv6 FORWARD rules left by a previous instance');
  if (!opts.ipMasq && await masqTableExists(sys, 'ip6')) {
    await removeMasq(sys, 'ip6');
    opts.logger.info({ table: `ip6 ${MASQ_TABLE}` }, 'removed IPv6 masquerade rules left by a previous instance (--ip-masq is off)');
  }
}

export interface FirewallOptions {
  /** --iptables-forward-rules */
  readonly forwardRules: boolean;
  /** --ip-masq */
  readonly ipMasq: boolean;
  /** not --ip-masq-fully-random-disable */
  readonly fullyRandom: boolean;
  /** --iptables-resync, seconds >= 1 */
  readonly resyncSeconds: number;
  readonly network: Prefix;
  /** this node's lease */
  readonly subnet: Prefix;
  /** dual-stack: IPv6Network and this node's IPv6 subnet get the same treatment (ip6tables/ip6) */
  readonly ipv6?: { readonly network: Prefix6; readonly subnet: Prefix6 };
  readonly logger: Logger;
  readonly sys?: FirewallSystem;
}

/** The firewall part of the status document. */
export interface FirewallStatus {
  readonly forwardRules: boolean;
  readonly resyncSeconds: number;
  /** forward-hook chains with policy drop found at the last check, and whether our accepts are there */
  readonly forward: { backend: ForwardBackend; chain: string; present: boolean; ipv6?: boolean }[];
  readonly masq: { enabled: boolean; present: boolean; fullyRandom: boolean };
  /** times a check found our rules missing and put them back */
  readonly repairs: number;
  /** ISO time of the last completed check, null before the first */
  readonly lastCheck: string | null;
  /** the last check's error, null when it succeeded */
  readonly lastError: string | null;
}

export class Firewall {
  private readonly sys: FirewallSystem;
  /** every site where this process installed its accepts, by siteName */
  private readonly known = new Map<string, ForwardSite>();
  private sites: { site: ForwardSite; present: boolean }[] = [];
  private masqOk = false;
  private fullyRandom = false;
  private fullyRandom6 = false;
  private repairs = 0;
  /** installs and repairs so far (a check that made one does not vouch for its fingerprint) */
  private changes = 0;
  /** fingerprint taken before the last full check that found everything in place (undefined: none) */
  private verified: string | undefined;
  /** periods since the last full check */
  private sinceFull = 0;
  private lastCheck: Date | undefined;
  private lastError: string | undefined;
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(private readonly opts: FirewallOptions) {
    this.sys = opts.sys ?? systemFirewall;
  }

  private get masqPlan(): MasqPlan {
    return { network: this.opts.network, subnet: this.opts.subnet, fullyRandom: this.opts.fullyRandom };
  }

  private get masqPlan6(): MasqPlan6 | undefined {
    const v6 = this.opts.ipv6;
    return v6 === undefined ? undefined : { family: 'ip6', network: v6.network, subnet: v6.subnet, fullyRandom: this.opts.fullyRandom };
  }

  /** Reconciles to the flags (leftovers removed), installs, starts the periodic check. Rejects (LinkError) when installing fails. */
  async start(): Promise<void> {
    const { logger } = this.opts;
    await removeLeftovers({ ipMasq: this.opts.ipMasq, logger, sys: this.sys, ipv6: this.opts.ipv6 !== undefined });
    if (this.opts.ipMasq) {
      this.fullyRandom = (await installMasq(this.sys, this.masqPlan)).fullyRandom;
      if (this.opts.fullyRandom && !this.fullyRandom) logger.warn('the kernel refuses masquerade fully-random; masquerading without it');
      const plan6 = this.masqPlan6;
      if (plan6 !== undefined) this.fullyRandom6 = (await installMasq(this.sys, plan6)).fullyRandom;
      this.masqOk = true;
    }
    if (this.opts.forwardRules) await this.checkForward();
    this.lastCheck = new Date();
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped || (!this.opts.forwardRules && !this.opts.ipMasq)) return;
    this.timer = setTimeout(() => {
      this.running = this.check().finally(() => {
        this.running = undefined;
        this.schedule();
      });
    }, this.opts.resyncSeconds * 1000);
    this.timer.unref();
  }

  /**
   * One periodic check: skipped when the firewall's fingerprint is the one verified (at most
   * FULL_CHECK_EVERY - 1 times in a row), else re-detect and repair what is missing. Never
   * rejects (errors are logged and kept for status).
   */
  async check(): Promise<void> {
    // without a forward site the full check is one or two small listings already: no digest
    // (the ruleset dump could cost more than those on a host with a large nat table)
    let fingerprint: string | undefined;
    if (this.sites.length > 0) {
      try {
        fingerprint = await rulesetFingerprint(this.sys, this.opts.ipv6 !== undefined);
      } catch {
        fingerprint = undefined;
      }
    }
    if (fingerprint !== undefined && fingerprint === this.verified && this.sinceFull + 1 < FULL_CHECK_EVERY) {
      this.sinceFull++;
      this.lastCheck = new Date();
      return;
    }
    this.sinceFull = 0;
    this.verified = undefined;
    const changesBefore = this.changes;
    try {
      if (this.opts.forwardRules) await this.checkForward();
      if (this.opts.ipMasq && !this.stopped && !(await masqPresent(this.sys, { ...this.masqPlan, fullyRandom: this.fullyRandom }))) {
        this.fullyRandom = (await installMasq(this.sys, { ...this.masqPlan, fullyRandom: this.fullyRandom })).fullyRandom;
        this.repairs++;
        this.changes++;
        this.opts.logger.warn({ table: `ip ${MASQ_TABLE}`, repairs: this.repairs }, 'masquerade rules were missing or changed; repaired');
      }
      const plan6 = this.masqPlan6;
      if (this.opts.ipMasq && plan6 !== undefined && !this.stopped && !(await masqPresent(this.sys, { ...plan6, fullyRandom: this.fullyRandom6 }))) {
        this.fullyRandom6 = (await installMasq(this.sys, { ...plan6, fullyRandom: this.fullyRandom6 })).fullyRandom;
        this.repairs++;
        this.changes++;
        this.opts.logger.warn({ table: `ip6 ${MASQ_TABLE}`, repairs: this.repairs }, 'IPv6 masquerade rules were missing or changed; repaired');
      }
      this.masqOk = this.opts.ipMasq;
      this.lastError = undefined;
      if (this.changes === changesBefore && !this.stopped) this.verified = fingerprint;
    } catch (err) {
      this.lastError = errorMessage(err);
      this.opts.logger.warn({ err: this.lastError }, 'firewall check failed');
    }
    this.lastCheck = new Date();
  }

  private async checkForward(): Promise<void> {
    const found = await detectForwardDrops(this.sys);
    if (this.opts.ipv6 !== undefined) found.push(...await detectForwardDrops(this.sys, true));
    const next: { site: ForwardSite; present: boolean }[] = [];
    for (const site of found) {
      if (this.stopped) return;
      const key = siteName(site);
      const network: AnyPrefix = site.ipv6 === true && this.opts.ipv6 !== undefined ? this.opts.ipv6.network : this.opts.network;
      if (!(await forwardPresent(this.sys, site, network))) {
        await installForward(this.sys, site, network);
        this.changes++;
        const fields = { backend: site.backend, chain: `${site.family} ${site.table} ${site.chain}`, network: prefixText(network) };
        if (this.known.has(key)) {
          this.repairs++;
          this.opts.logger.warn({ ...fields, repairs: this.repairs }, 'FORWARD accept rules were missing; repaired');
        } else {
          const why = site.before === undefined ? 'FORWARD policy is drop' : 'FORWARD chain ends in a drop/reject';
          this.opts.logger.info(fields, `${why}; accept rules for the Network installed`);
        }
      }
      this.known.set(key, site);
      next.push({ site, present: true });
    }
    this.sites = next;
  }

  /**
   * Stops the checks and removes our rules from every site where this process put them (few
   * commands: shutdown is time-bounded; start() sweeps everything anyway). Rejects with the
   * first error after trying all.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    await this.running;
    const errs: unknown[] = [];
    for (const site of this.known.values()) {
      try {
        if (site.backend === 'nftables') await removeNftForward(this.sys, site);
        else await removeIptablesForward(this.sys, iptablesBin(site.backend, site.ipv6));
      } catch (err) {
        errs.push(err);
      }
    }
    this.known.clear();
    if (this.opts.ipMasq) {
      const families: MasqFamily[] = this.opts.ipv6 === undefined ? ['ip'] : ['ip', 'ip6'];
      for (const family of families) {
        try {
          await removeMasq(this.sys, family);
        } catch (err) {
          errs.push(err);
        }
      }
    }
    this.sites = [];
    this.masqOk = false;
    if (errs.length > 0) throw errs[0];
  }

  status(): FirewallStatus {
    return {
      forwardRules: this.opts.forwardRules,
      resyncSeconds: this.opts.resyncSeconds,
      forward: this.sites.map(({ site, present }) => ({ backend: site.backend, chain: `${site.family} ${site.table} ${site.chain}`, present, ...(site.ipv6 === true && { ipv6: true }) })),
      masq: { enabled: this.opts.ipMasq, present: this.masqOk, fullyRandom: this.opts.ipMasq && this.fullyRandom },
      repairs: this.repairs,
      lastCheck: this.lastCheck?.toISOString() ?? null,
      lastError: this.lastError ?? null,
    };
  }

  get repairCount(): number {
    return this.repairs;
  }
}
