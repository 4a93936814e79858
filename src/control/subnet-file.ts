/**
 * The subnet file flannel's CNI plugin reads (default /run/flannel/subnet.env), in
 * flannel's exact form:
 *
 *   FLANNEL_NETWORK=10.244.0.0/16
 *   FLANNEL_SUBNET=10.244.3.1/24
 *   FLANNEL_MTU=1472
 *   FLANNEL_IPMASQ=false
 *
 * FLANNEL_SUBNET is the first host address of the lease's subnet, with its length. A
 * dual-stack node adds, after FLANNEL_SUBNET (flannel's WriteSubnetFile order):
 *
 *   FLANNEL_IPV6_NETWORK=fd00:10:244::/56
 *   FLANNEL_IPV6_SUBNET=fd00:10:244:3::1/64
 */
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import * as path from 'node:path';
import { ConfigError } from '../errors';
import { formatIp, formatPrefix, parsePrefix, type Prefix } from '../net/addr';
import { formatIp6, formatPrefix6, parsePrefix6, type Prefix6 } from '../net/addr6';

export const DEFAULT_SUBNET_FILE = '/run/flannel/subnet.env';

export interface SubnetFileContents {
  network: Prefix;
  subnet: Prefix;
  mtu: number;
  ipMasq: boolean;
  /** dual-stack: FLANNEL_IPV6_NETWORK and FLANNEL_IPV6_SUBNET (the subnet's network address here) */
  ipv6?: { network: Prefix6; subnet: Prefix6 };
}

/** The file's text, byte-for-byte what flanneld writes (IPv4-only, or dual-stack with `ipv6`). */
export function formatSubnetFile(c: SubnetFileContents): string {
  const v6 = c.ipv6
    ? `FLANNEL_IPV6_NETWORK=${formatPrefix6(c.ipv6.network)}\n` +
      `FLANNEL_IPV6_SUBNET=${formatIp6(c.ipv6.subnet.addr + 1n)}/${c.ipv6.subnet.len}\n`
    : '';
  return (
    `FLANNEL_NETWORK=${formatPrefix(c.network)}\n` +
    `FLANNEL_SUBNET=${formatIp((c.subnet.addr + 1) >>> 0)}/${c.subnet.len}\n` +
    v6 +
    `FLANNEL_MTU=${c.mtu}\n` +
    `FLANNEL_IPMASQ=${c.ipMasq ? 'true' : 'false'}\n`
  );
}

/**
 * Parses a subnet file. FLANNEL_IPV6_NETWORK/FLANNEL_IPV6_SUBNET are optional (both or
 * neither give `ipv6`); other lines (comments, blank lines) are ignored. Throws ConfigError
 * naming the file and the variable when one of the four IPv4 ones is missing or malformed, or
 * an IPv6 one is malformed.
 */
export function parseSubnetFile(text: string, file = 'subnet file'): SubnetFileContents {
  const vars = new Map<string, string>();
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) continue;
    const eq = line.indexOf('=');
    if (eq <= 0) continue;
    let value = line.slice(eq + 1).trim();
    if (value.length >= 2 && ((value.startsWith('"') && value.endsWith('"')) || (value.startsWith("'") && value.endsWith("'")))) {
      value = value.slice(1, -1);
    }
    vars.set(line.slice(0, eq).trim(), value);
  }
  const need = (name: string): string => {
    const v = vars.get(name);
    if (v === undefined) throw new ConfigError(`${file}: ${name} is missing`);
    return v;
  };
  const bad = (name: string, v: string, what: string): never => {
    throw new ConfigError(`${file}: ${name}=${v} is not ${what}`);
  };

  const netText = need('FLANNEL_NETWORK');
  const network = parsePrefix(netText, false) ?? bad('FLANNEL_NETWORK', netText, 'an IPv4 CIDR');
  const subText = need('FLANNEL_SUBNET');
  const host = parsePrefix(subText, false) ?? bad('FLANNEL_SUBNET', subText, 'an IPv4 address/len');
  // parsePrefix(…, false) already masked the host bits: 10.244.3.1/24 -> 10.244.3.0/24
  const subnet: Prefix = { addr: host.addr, len: host.len };
  const mtuText = need('FLANNEL_MTU');
  const mtu = /^\d{1,5}$/.test(mtuText) ? Number(mtuText) : bad('FLANNEL_MTU', mtuText, 'a number');
  if (mtu < 68 || mtu > 65535) bad('FLANNEL_MTU', mtuText, 'an MTU between 68 and 65535');
  const masqText = need('FLANNEL_IPMASQ');
  if (masqText !== 'true' && masqText !== 'false') bad('FLANNEL_IPMASQ', masqText, '"true" or "false"');
  const net6Text = vars.get('FLANNEL_IPV6_NETWORK');
  const sub6Text = vars.get('FLANNEL_IPV6_SUBNET');
  let ipv6: SubnetFileContents['ipv6'];
  if (net6Text !== undefined && sub6Text !== undefined) {
    const network6 = parsePrefix6(net6Text, false) ?? bad('FLANNEL_IPV6_NETWORK', net6Text, 'an IPv6 CIDR');
    // parsePrefix6(…, false) masks the host bits: fd00:10:244:3::1/64 -> fd00:10:244:3::/64
    const subnet6 = parsePrefix6(sub6Text, false) ?? bad('FLANNEL_IPV6_SUBNET', sub6Text, 'an IPv6 address/len');
    ipv6 = { network: network6, subnet: subnet6 };
  }
  return { network: { addr: network.addr, len: network.len }, subnet, mtu, ipMasq: masqText === 'true', ...(ipv6 ? { ipv6 } : {}) };
}

/** Reads and parses the subnet file; undefined when it does not exist. */
export async function readSubnetFile(file: string): Promise<SubnetFileContents | undefined> {
  let text: string;
  try {
    text = await fs.readFile(file, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new ConfigError(`cannot read subnet file ${file}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
  }
  return parseSubnetFile(text, file);
}

/**
 * Writes the subnet file atomically: a temp file in the same directory, fsync, rename over
 * the target, fsync of the directory. Creates the directory. Mode 0644.
 */
export async function writeSubnetFile(file: string, c: SubnetFileContents): Promise<void> {
  const dir = path.dirname(file);
  await fs.mkdir(dir, { recursive: true, mode: 0o755 });
  const tmp = path.join(dir, `.${path.basename(file)}.${process.pid}.${randomBytes(4).toString('hex')}.tmp`);
  let renamed = false;
  try {
    const fh = await fs.open(tmp, 'wx', 0o644);
    try {
      await fh.writeFile(formatSubnetFile(c), 'utf8');
      await fh.chmod(0o644); // the umask may have narrowed the mode given to open
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, file);
    renamed = true;
    const dh = await fs.open(dir, 'r');
    try {
      await dh.sync();
    } catch {
      // some filesystems refuse fsync on a directory; the rename is done either way
    } finally {
      await dh.close();
    }
  } finally {
    if (!renamed) await fs.rm(tmp, { force: true });
  }
}
