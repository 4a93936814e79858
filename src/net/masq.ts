/**
 * --ip-masq: flanneld's masquerade rule set (pkg/trafficmngr/iptables masqRules, the one its
 * udp backend uses), in overlayd's own nftables table `ip overlayd`, chain `postrouting`
 * (a nat base chain: a masquerade there applies whatever other tables hold; the first NAT
 * binding of a connection wins, as with iptables' nat table). In order:
 *   meta mark & 0x4000 == 0x4000   return      (kube-proxy's mark: no double NAT)
 *   saddr <subnet>  daddr <Network> return      (this node's pods inside the Network)
 *   saddr <Network> daddr <subnet>  return
 *   saddr != <Network> daddr <subnet> return    (outside -> this node's pods: source kept)
 *   saddr <Network> daddr != 224.0.0.0/4 masquerade [fully-random]   (pods -> outside)
 *   saddr != <Network> daddr <Network>  masquerade [fully-random]   (outside -> other nodes' pods)
 * Every rule carries the comment "flanneld masq". The table is replaced in one transaction
 * (idempotent over a restart or a crashed instance's leftovers) and deleted on shutdown.
 * Dual-stack (flanneld's masqIP6Rules, the same list with ff00::/8 for the multicast range):
 * the table `ip6 overlayd`, same chain, `ip6 saddr/daddr` matches; a MasqPlan6 selects it.
 */
import { formatPrefix, type Prefix } from './addr';
import { formatPrefix6, type Prefix6 } from './addr6';
import { mustRun, parseNftJson, type FirewallSystem } from './fwexec';

export const MASQ_TABLE = 'overlayd';
export const MASQ_CHAIN = 'postrouting';
export const MASQ_COMMENT = 'flanneld masq';
/** kube-proxy's masquerade mark (flannel's trafficmngr.KubeProxyMark 0x4000/0x4000) */
const KUBE_PROXY_MARK = '0x00004000';

export interface MasqPlan {
  /** the cluster Network */
  readonly network: Prefix;
  /** this node's lease */
  readonly subnet: Prefix;
  /** masquerade with fully-random port selection (flanneld's default; --ip-masq-fully-random-disable turns it off) */
  readonly fullyRandom: boolean;
}

/** The IPv6 rule set (dual-stack): IPv6Network and this node's IPv6 subnet. */
export interface MasqPlan6 {
  readonly family: 'ip6';
  readonly network: Prefix6;
  readonly subnet: Prefix6;
  readonly fullyRandom: boolean;
}

/** nft family of the table: `ip` (IPv4) or `ip6` */
export type MasqFamily = 'ip' | 'ip6';

function familyOf(plan: MasqPlan | MasqPlan6): MasqFamily {
  return 'family' in plan ? 'ip6' : 'ip';
}

/** The rule bodies of the chain, in order (without the comment). */
export function masqRules(plan: MasqPlan | MasqPlan6): string[] {
  const [f, net, sub, multicast] = 'family' in plan
    ? ['ip6', formatPrefix6(plan.network), formatPrefix6(plan.subnet), 'ff00::/8']
    : ['ip', formatPrefix(plan.network), formatPrefix(plan.subnet), '224.0.0.0/4'];
  const masq = plan.fullyRandom ? 'masquerade fully-random' : 'masquerade';
  return [
    `meta mark & ${KUBE_PROXY_MARK} == ${KUBE_PROXY_MARK} return`,
    `${f} saddr ${sub} ${f} daddr ${net} return`,
    `${f} saddr ${net} ${f} daddr ${sub} return`,
    `${f} saddr != ${net} ${f} daddr ${sub} return`,
    `${f} saddr ${net} ${f} daddr != ${multicast} ${masq}`,
    `${f} saddr != ${net} ${f} daddr ${net} ${masq}`,
  ];
}

/** The nft script that (re)creates the table in one transaction. */
export function masqScript(plan: MasqPlan | MasqPlan6): string {
  const f = familyOf(plan);
  return [
    `table ${f} ${MASQ_TABLE}`,
    `delete table ${f} ${MASQ_TABLE}`,
    `table ${f} ${MASQ_TABLE} {`,
    `  chain ${MASQ_CHAIN} {`,
    '    type nat hook postrouting priority srcnat; policy accept;',
    ...masqRules(plan).map((r) => `    ${r} comment "${MASQ_COMMENT}"`),
    '  }',
    '}',
    '',
  ].join('\n');
}

/**
 * Installs the table; when the kernel refuses fully-random, installs it without and says so.
 * Resolves whether fully-random is in force. LinkError when nft fails.
 */
export async function installMasq(sys: FirewallSystem, plan: MasqPlan | MasqPlan6): Promise<{ fullyRandom: boolean }> {
  if (plan.fullyRandom) {
    const r = await sys.run('nft', ['-f', '-'], masqScript(plan));
    if (r.code === 0) return { fullyRandom: true };
  }
  await mustRun(sys, 'nft', ['-f', '-'], masqScript({ ...plan, fullyRandom: false }));
  return { fullyRandom: false };
}

/** True when the table holds the chain with all of its rules (the periodic check). */
export async function masqPresent(sys: FirewallSystem, plan: MasqPlan | MasqPlan6): Promise<boolean> {
  const r = await sys.run('nft', ['-j', 'list', 'table', familyOf(plan), MASQ_TABLE]);
  if (r.code !== 0) return false;
  const listing = parseNftJson(r.stdout);
  const chain = listing.chains.find((c) => c.name === MASQ_CHAIN && c.hook === 'postrouting' && c.type === 'nat');
  const ours = listing.rules.filter((x) => x.chain === MASQ_CHAIN && x.comment === MASQ_COMMENT);
  return chain !== undefined && ours.length === masqRules(plan).length && listing.rules.length === ours.length;
}

/** Deletes overlayd's table of `family`; absent is fine. LinkError when nft fails otherwise. */
export async function removeMasq(sys: FirewallSystem, family: MasqFamily = 'ip'): Promise<void> {
  await mustRun(sys, 'nft', ['-f', '-'], `table ${family} ${MASQ_TABLE}\ndelete table ${family} ${MASQ_TABLE}\n`);
}
