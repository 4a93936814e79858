/**
 * Link setup through ip(8): TUN configuration and its undo (underlay discovery: underlay.ts).
 * Every command runs with a time bound; a failure names the command and its stderr.
 * All calls run in the network namespace of this process.
 */
import { execFile } from 'node:child_process';
import { writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { LinkError, ConfigError } from '../errors';
import { formatIp, formatPrefix, parseIp, type Prefix } from './addr';
import { formatIp6, formatPrefix6, type Prefix6 } from './addr6';

const IP_TIMEOUT_MS = 10_000;

/** Runs `ip args...`, resolves its stdout; rejects with LinkError(command, stderr). */
export function ip(args: readonly string[]): Promise<string> {
  const command = `ip ${args.join(' ')}`;
  return new Promise((resolve, reject) => {
    execFile('ip', [...args], { timeout: IP_TIMEOUT_MS, encoding: 'utf8' }, (err, stdout, stderr) => {
      if (err) reject(new LinkError(command, stderr || err.message));
      else resolve(stdout);
    });
  });
}

export interface Underlay {
  /** interface name */
  readonly name: string;
  /** interface MTU, bytes */
  readonly mtu: number;
  /** the interface's first IPv4 address, if any */
  readonly address?: string;
}

/** IPv4 + UDP header bytes added to every packet on the underlay. */
export const ENCAP_OVERHEAD = 28;
/** IPv6 + UDP header bytes added to every packet on an IPv6 underlay. */
export const ENCAP_OVERHEAD6 = 48;

/**
 * The TUN MTU (bytes) for an underlay MTU: minus the IPv6+UDP headers when this node carries
 * inner packets over an IPv6 underlay (any peer may then be reached over it), else minus
 * IPv4+UDP. FLANNEL_MTU is this value.
 */
export function tunMtuFor(underlayMtu: number, ipv6Underlay: boolean): number {
  return underlayMtu - (ipv6Underlay ? ENCAP_OVERHEAD6 : ENCAP_OVERHEAD);
}

/** The IPv6 half of the TUN link (dual-stack). */
export interface TunLinkIpv6Plan {
  /** the v6 subnet's network address, given /128 */
  readonly address: bigint;
  /** the cluster IPv6Network, routed through the TUN */
  readonly network: Prefix6;
}

/**
 * Per-device IPv6 sysctls written before the link goes up (order matters: addr_gen_mode
 * before disable_ipv6=0), so that the kernel never creates a link-local address and never
 * sends router solicitations, DAD or MLD into the tunnel.
 */
export const TUN_IPV6_SYSCTLS: readonly (readonly [string, string])[] = [
  ['addr_gen_mode', '1'],
  ['accept_ra', '0'],
  ['accept_dad', '0'],
  ['dad_transmits', '0'],
  ['router_solicitations', '0'],
  ['disable_ipv6', '0'],
];

export interface TunLinkPlan {
  readonly name: string;
  /** the lease's network address, given /32 */
  readonly address: number;
  /** bytes; underlay MTU - ENCAP_OVERHEAD */
  readonly mtu: number;
  /** the cluster Network, routed through the TUN */
  readonly network: Prefix;
  /** dual-stack: IPv6 address and route too; undefined = IPv4 only (IPv6 disabled on the device) */
  readonly ipv6?: TunLinkIpv6Plan;
}

/** What configureTun did, so that it can be undone. */
export interface TunLinkState {
  readonly plan: TunLinkPlan;
  readonly undo: (() => Promise<void>)[];
}

/**
 * Configures the TUN device: address/32, MTU, up, accept_local=1, route Network dev TUN;
 * with `ipv6`: the IPv6 sysctls (TUN_IPV6_SYSCTLS) before anything else, address/128
 * nodad, route IPv6Network dev TUN.
 * On failure undoes what it did and rethrows the first error. `replace` semantics make
 * it idempotent over the leftovers of a crashed instance.
 */
/** The system calls configureTun makes; tests substitute them (no root needed). */
export interface LinkOps {
  ip(args: readonly string[]): Promise<string>;
  /** writes `value` to /proc/sys/<path>; resolves false when the file does not exist */
  sysctl(path: string, value: string): Promise<boolean>;
}

async function writeSysctl(rel: string, value: string): Promise<boolean> {
  const file = `/proc/sys/${rel}`;
  if (!existsSync(file)) return false;
  await writeFile(file, value).catch((err: unknown) => {
    throw new LinkError(`write ${value} > ${file}`, String(err));
  });
  return true;
}

export const systemLinkOps: LinkOps = { ip, sysctl: writeSysctl };

export async function configureTun(plan: TunLinkPlan, ops: LinkOps = systemLinkOps): Promise<TunLinkState> {
  const dev = plan.name;
  const addr = `${formatIp(plan.address)}/32`;
  const net = formatPrefix(plan.network);
  const state: TunLinkState = { plan, undo: [] };
  try {
    if (plan.ipv6 === undefined) {
      // IPv4 only: no IPv6 link-local address, so no router solicitations or MLD reports
      // land in the TUN as packets the engine can only drop (skipped where IPv6 is absent)
      await ops.sysctl(`net/ipv6/conf/${dev}/disable_ipv6`, '1');
    } else {
      for (const [key, value] of TUN_IPV6_SYSCTLS) {
        if (!(await ops.sysctl(`net/ipv6/conf/${dev}/${key}`, value))) {
          throw new LinkError(`write ${value} > /proc/sys/net/ipv6/conf/${dev}/${key}`, 'no such file (IPv6 disabled in this kernel, or the device is gone)');
        }
      }
    }
    await ops.ip(['addr', 'replace', addr, 'dev', dev]);
    state.undo.push(() => ops.ip(['addr', 'del', addr, 'dev', dev]).then(() => undefined));
    if (plan.ipv6 !== undefined) {
      const addr6 = `${formatIp6(plan.ipv6.address)}/128`;
      await ops.ip(['-6', 'addr', 'replace', addr6, 'dev', dev, 'nodad']);
      state.undo.push(() => ops.ip(['-6', 'addr', 'del', addr6, 'dev', dev]).then(() => undefined));
    }
    await ops.ip(['link', 'set', 'dev', dev, 'mtu', String(plan.mtu), 'up']);
    state.undo.push(() => ops.ip(['link', 'set', 'dev', dev, 'down']).then(() => undefined));
    // ICMP errors we write into the TUN carry the TUN's (local) address as source: without
    // accept_local the kernel drops them as martians.
    if (!(await ops.sysctl(`net/ipv4/conf/${dev}/accept_local`, '1'))) {
      throw new LinkError(`write 1 > /proc/sys/net/ipv4/conf/${dev}/accept_local`, 'no such file (is the device there?)');
    }
    await ops.ip(['route', 'replace', net, 'dev', dev]);
    state.undo.push(() => ops.ip(['route', 'del', net, 'dev', dev]).then(() => undefined));
    if (plan.ipv6 !== undefined) {
      const net6 = formatPrefix6(plan.ipv6.network);
      await ops.ip(['-6', 'route', 'replace', net6, 'dev', dev]);
      state.undo.push(() => ops.ip(['-6', 'route', 'del', net6, 'dev', dev]).then(() => undefined));
    }
  } catch (err) {
    await unconfigureTun(state);
    throw err;
  }
  return state;
}

/** Undoes configureTun in reverse order; errors are collected, not thrown (the device may be gone). */
export async function unconfigureTun(state: TunLinkState): Promise<Error[]> {
  const errors: Error[] = [];
  for (const step of state.undo.splice(0).reverse()) {
    try {
      await step();
    } catch (err) {
      errors.push(err as Error);
    }
  }
  return errors;
}

export function ipToUint(s: string): number {
  const n = parseIp(s);
  if (n === undefined) throw new ConfigError(`"${s}" is not an IPv4 address`);
  return n;
}
