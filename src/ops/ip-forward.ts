/**
 * The node prerequisite net.ipv4.ip_forward: without it the kernel drops every packet between
 * the pods' bridge and the TUN, silently. At start the daemon turns it on when it is off and
 * says so (as Docker does); when it cannot (read-only /proc/sys, no privilege) it refuses to
 * start with a message naming the sysctl. It is left on at shutdown: other services on the
 * node may rely on it by then. Per network namespace (/proc/sys/net is the caller's netns).
 */
import { readdir, readFile, writeFile } from 'node:fs/promises';
import { ConfigError, errorMessage } from '../errors';

export const IP_FORWARD_SYSCTL = 'net.ipv4.ip_forward';
const IP_FORWARD_PATH = '/proc/sys/net/ipv4/ip_forward';

/** 'already' when it was on, 'enabled' when this call turned it on; throws ConfigError when it stays off. */
export async function ensureIpForward(path = IP_FORWARD_PATH): Promise<'already' | 'enabled'> {
  let value: string;
  try {
    value = (await readFile(path, 'utf8')).trim();
  } catch (err) {
    throw new ConfigError(`cannot read ${IP_FORWARD_SYSCTL} (${path}): ${errorMessage(err)}`);
  }
  if (value === '1') return 'already';
  try {
    await writeFile(path, '1\n');
  } catch (err) {
    throw new ConfigError(`${IP_FORWARD_SYSCTL} is ${value} and cannot be set (${errorMessage(err)}): pods cannot reach other nodes without it; ` +
      `set it with \`sysctl -w ${IP_FORWARD_SYSCTL}=1\` (and in /etc/sysctl.d/ to keep it) and start overlayd again`);
  }
  const after = (await readFile(path, 'utf8')).trim();
  if (after !== '1') throw new ConfigError(`${IP_FORWARD_SYSCTL} stays ${after} after writing 1 to ${path}; set it with \`sysctl -w ${IP_FORWARD_SYSCTL}=1\``);
  return 'enabled';
}

export const IPV6_FORWARD_SYSCTL = 'net.ipv6.conf.all.forwarding';

/** What ensureIpv6Forward did. */
export interface Ipv6ForwardResult {
  readonly state: 'already' | 'enabled';
  /** interfaces whose accept_ra was 1 and is now 2, so they keep taking router advertisements */
  readonly acceptRa2: readonly string[];
}

/**
 * The IPv6 twin of ensureIpForward, for a dual-stack network: turns on
 * net.ipv6.conf.all.forwarding when it is off. With forwarding on, Linux ignores router
 * advertisements on interfaces with accept_ra=1 (the default), and a node that gets its
 * IPv6 default route by SLAAC would lose it when the route expires; so every interface with
 * accept_ra=1 is first set to 2 ("accept even when forwarding"), which keeps its behaviour.
 * Interfaces with 0 or 2 are left alone. `confDir` is /proc/sys/net/ipv6/conf of the
 * caller's network namespace. Throws ConfigError when forwarding stays off.
 */
export async function ensureIpv6Forward(confDir = '/proc/sys/net/ipv6/conf'): Promise<Ipv6ForwardResult> {
  const fwd = `${confDir}/all/forwarding`;
  let value: string;
  try {
    value = (await readFile(fwd, 'utf8')).trim();
  } catch (err) {
    throw new ConfigError(`cannot read ${IPV6_FORWARD_SYSCTL} (${fwd}): ${errorMessage(err)} (is IPv6 disabled on this node? EnableIPv6 needs it)`);
  }
  if (value === '1') return { state: 'already', acceptRa2: [] };
  const acceptRa2: string[] = [];
  for (const dev of (await readdir(confDir)).sort()) {
    if (dev === 'all' || dev === 'default') continue;
    const p = `${confDir}/${dev}/accept_ra`;
    const ra = (await readFile(p, 'utf8').catch(() => '')).trim();
    if (ra !== '1') continue;
    try {
      await writeFile(p, '2\n');
      acceptRa2.push(dev);
    } catch (err) {
      throw new ConfigError(`${IPV6_FORWARD_SYSCTL} is ${value}; before turning it on, net.ipv6.conf.${dev}.accept_ra must go from 1 to 2 ` +
        `(or the interface stops taking router advertisements) and that failed: ${errorMessage(err)}`);
    }
  }
  try {
    await writeFile(fwd, '1\n');
  } catch (err) {
    throw new ConfigError(`${IPV6_FORWARD_SYSCTL} is ${value} and cannot be set (${errorMessage(err)}): pods cannot reach other nodes over IPv6 without it; ` +
      `set it with \`sysctl -w ${IPV6_FORWARD_SYSCTL}=1\` (and in /etc/sysctl.d/ to keep it) and start overlayd again`);
  }
  const after = (await readFile(fwd, 'utf8')).trim();
  if (after !== '1') throw new ConfigError(`${IPV6_FORWARD_SYSCTL} stays ${after} after writing 1 to ${fwd}; set it with \`sysctl -w ${IPV6_FORWARD_SYSCTL}=1\``);
  return { state: 'enabled', acceptRa2 };
}
