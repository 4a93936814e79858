/**
 * The node prerequisite net.ipv4.ip_forward: without it the kernel drops every packet between
 * the pods' bridge and the TUN, silently. At start the daemon turns it on when it is off and
 * says so (as Docker does); when it cannot (read-only /proc/sys, no privilege) it refuses to
 * start with a message naming the sysctl. It is left on at shutdown: other services on the
 * node may rely on it by then. Per network namespace (/proc/sys/net is the caller's netns).
 */
import { readFile, writeFile } from 'node:fs/promises';
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
