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
 */
import { formatPrefix, type Prefix } from './addr';
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

/** The rule bodies of the chain, in order (without the comment). */
export function masqRules(plan: MasqPlan): string[] {
  const net = formatPrefix(plan.network);
  const sub = formatPrefix(plan.subnet);
  const masq = plan.fullyRandom ? 'masquerade fully-random' : 'masquerade';
  return [
    `meta mark & ${KUBE_PROXY_MARK} == ${KUBE_PROXY_MARK} return`,
    `ip saddr ${sub} ip daddr ${net} return`,
    `ip saddr ${net} ip daddr ${sub} return`,
    `ip saddr != ${net} ip daddr ${sub} return`,
    `ip saddr ${net} ip daddr != 224.0.0.0/4 ${masq}`,
    `ip saddr != ${net} ip daddr ${net} ${masq}`,
  ];
}

/** The nft script that (re)creates the table in one transaction. */
export function masqScript(plan: MasqPlan): string {
  return [
    `table ip ${MASQ_TABLE}`,
    `delete table ip ${MASQ_TABLE}`,
    `table ip ${MASQ_TABLE} {`,
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
export async function installMasq(sys: FirewallSystem, plan: MasqPlan): Promise<{ fullyRandom: boolean }> {
  if (plan.fullyRandom) {
    const r = await sys.run('nft', ['-f', '-'], masqScript(plan));
    if (r.code === 0) return { fullyRandom: true };
  }
  await mustRun(sys, 'nft', ['-f', '-'], masqScript({ ...plan, fullyRandom: false }));
  return { fullyRandom: false };
}

/** True when the table holds the chain with all of its rules (the periodic check). */
export async function masqPresent(sys: FirewallSystem, plan: MasqPlan): Promise<boolean> {
  const r = await sys.run('nft', ['-j', 'list', 'table', 'ip', MASQ_TABLE]);
  if (r.code !== 0) return false;
  const listing = parseNftJson(r.stdout);
  const chain = listing.chains.find((c) => c.name === MASQ_CHAIN && c.hook === 'postrouting' && c.type === 'nat');
  const ours = listing.rules.filter((x) => x.chain === MASQ_CHAIN && x.comment === MASQ_COMMENT);
  return chain !== undefined && ours.length === masqRules(plan).length && listing.rules.length === ours.length;
}

/** Deletes overlayd's table; absent is fine. LinkError when nft fails otherwise. */
export async function removeMasq(sys: FirewallSystem): Promise<void> {
  await mustRun(sys, 'nft', ['-f', '-'], `table ip ${MASQ_TABLE}\ndelete table ip ${MASQ_TABLE}\n`);
}
