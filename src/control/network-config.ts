/**
 * flannel's network config (`<prefix>/config`): parsing and validation.
 *
 *   {"Network":"10.244.0.0/16","SubnetLen":24,"SubnetMin":"10.244.1.0",
 *    "SubnetMax":"10.244.255.0","Backend":{"Type":"udp","Port":8285}}
 *
 * Defaults as flannel's: SubnetLen 24, SubnetMin the second subnet of the Network,
 * SubnetMax the last one, Backend.Type udp, Port 8285. Backend.DirectRouting (boolean,
 * default false, spelled as flannel's vxlan backend spells it): route same-link peers
 * without encapsulation (src/net/direct-routes.ts). Unknown fields are ignored (flanneld ignores
 * them too, and nodes share this key); networkConfigWarnings() names them for a log line.
 *
 * Dual-stack (flannel's pkg/subnet/config.go CheckNetworkConfig): EnableIPv6 true adds
 * IPv6Network (required), IPv6SubnetLen (default 64 for networks of /62 or shorter, else the
 * Network's length + 2; at most 126; at least the Network's length + 2; the Network at most
 * /124 when defaulted), IPv6SubnetMin/IPv6SubnetMax (default: the second and the last subnet;
 * inside the Network, aligned). With EnableIPv6 false or absent the IPv6 fields are not read
 * (ignored, as flanneld does) and the result is what it was before dual-stack. EnableIPv4 false
 * (an IPv6-only network) is refused: overlayd's node identity and flannel's udp wire are IPv4.
 */
import { ConfigError } from '../errors';
import { didYouMean } from '../suggest';
import { formatIp, formatPrefix, maskOf, parseIp, parsePrefix, prefixContains, prefixSize } from '../net/addr';
import { formatIp6, formatPrefix6, maskOf6, parseIp6, parsePrefix6, prefix6Contains } from '../net/addr6';
import type { Ipv6NetworkConfig, NetworkConfig } from './source';

export type { NetworkConfig } from './source';

export const DEFAULT_SUBNET_LEN = 24;
export const MAX_SUBNET_LEN = 30;
export const DEFAULT_UDP_PORT = 8285;
/** flannel's IPv6 limits: subnets at most /126, a defaulted IPv6SubnetLen needs a Network of at most /124 */
export const MAX_IPV6_SUBNET_LEN = 126;
export const MAX_IPV6_NETWORK_LEN = 124;
export const DEFAULT_IPV6_SUBNET_LEN = 64;

/** A bad network config: names the etcd key and the offending field. */
export class NetworkConfigError extends ConfigError {
  readonly key: string;
  /** the JSON field, e.g. "SubnetLen" or "Backend.Port"; "" for the whole document */
  readonly field: string;
  constructor(key: string, field: string, problem: string) {
    super(`invalid network config in etcd key ${key}: ${field ? `${field}: ` : ''}${problem}`);
    this.key = key;
    this.field = field;
  }
}

/** Every field of flannel's network config (pkg/subnet/config.go Config). */
export const FLANNEL_CONFIG_KEYS: readonly string[] = [
  'EnableIPv4', 'EnableIPv6', 'EnableNFTables', 'Network', 'IPv6Network', 'SubnetMin', 'SubnetMax',
  'IPv6SubnetMin', 'IPv6SubnetMax', 'SubnetLen', 'IPv6SubnetLen', 'Backend',
];

/**
 * One line per top-level field that flannel's network config does not have, with the nearest
 * field ("unknown key "Netwrok" in /coreos.com/network/config (ignored): did you mean "Network"?").
 * Empty for text that is not a JSON object (parseNetworkConfig reports that).
 */
export function networkConfigWarnings(text: string, key: string): string[] {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    return [];
  }
  if (!isObject(doc)) return [];
  return Object.keys(doc).filter((k) => !FLANNEL_CONFIG_KEYS.includes(k) && !GO_FOLDED_KEYS.some((g) => g.toLowerCase() === k.toLowerCase()))
    .map((k) => `unknown key "${k}" in ${key} (ignored, as flanneld does)${didYouMean(k, FLANNEL_CONFIG_KEYS)}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/**
 * A field as Go's encoding/json finds it: any key equal to `name` ignoring case, the last one
 * winning (flannel's own tests write "enableIPv6", "ipv6Network"). Used for the dual-stack
 * fields; the IPv4 ones keep their exact spelling, as before.
 */
function goField(doc: Record<string, unknown>, name: string): unknown {
  const lower = name.toLowerCase();
  let v: unknown;
  for (const k of Object.keys(doc)) if (k.toLowerCase() === lower) v = doc[k];
  return v;
}

/** Dual-stack fields read ignoring case (goField). */
const GO_FOLDED_KEYS: readonly string[] = ['EnableIPv4', 'EnableIPv6', 'IPv6Network', 'IPv6SubnetLen', 'IPv6SubnetMin', 'IPv6SubnetMax'];

function show(v: unknown): string {
  return JSON.stringify(v) ?? String(v);
}

/**
 * Parses and validates the network config text stored at `key`.
 * Throws NetworkConfigError (a ConfigError) naming the key and the field.
 */
export function parseNetworkConfig(text: string, key: string): NetworkConfig {
  const fail = (field: string, problem: string): never => {
    throw new NetworkConfigError(key, field, problem);
  };
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    return fail('', `invalid JSON (${err instanceof Error ? err.message : String(err)})`);
  }
  if (!isObject(doc)) return fail('', `must be a JSON object, got ${show(doc)}`);

  const flag = (field: string, dflt: boolean): boolean => {
    const raw = goField(doc, field);
    if (raw === undefined || raw === null) return dflt;
    if (typeof raw !== 'boolean') return fail(field, `must be true or false, got ${show(raw)}`);
    return raw;
  };
  if (!flag('EnableIPv4', true)) {
    return fail('EnableIPv4', 'false (an IPv6-only network) is not supported: overlayd identifies nodes by their IPv4 PublicIP and carries flannel\'s udp wire over IPv4; use EnableIPv4 true with EnableIPv6 true for dual-stack');
  }
  const ipv6 = flag('EnableIPv6', false) ? parseIpv6Config(doc, fail) : undefined;

  // Network
  const netRaw = doc['Network'];
  if (netRaw === undefined) return fail('Network', 'missing (e.g. "Network":"10.244.0.0/16")');
  if (typeof netRaw !== 'string') return fail('Network', `must be an IPv4 CIDR string, got ${show(netRaw)}`);
  const loose = parsePrefix(netRaw, false);
  if (!loose) return fail('Network', `${show(netRaw)} is not a valid IPv4 CIDR (a.b.c.d/len)`);
  const network = parsePrefix(netRaw, true);
  if (!network) return fail('Network', `${show(netRaw)} has host bits set (did you mean ${formatPrefix(loose)}?)`);

  // SubnetLen
  const lenRaw = doc['SubnetLen'];
  let subnetLen = DEFAULT_SUBNET_LEN;
  if (lenRaw !== undefined) {
    if (typeof lenRaw !== 'number' || !Number.isInteger(lenRaw)) {
      return fail('SubnetLen', `must be an integer, got ${show(lenRaw)}`);
    }
    subnetLen = lenRaw;
  }
  const lenWhat = lenRaw === undefined ? `${subnetLen} (the default)` : String(subnetLen);
  if (subnetLen > MAX_SUBNET_LEN) return fail('SubnetLen', `${lenWhat} is longer than ${MAX_SUBNET_LEN}`);
  if (subnetLen <= network.len) {
    return fail('SubnetLen', `${lenWhat} must be longer than the Network's prefix length ${network.len} (Network ${formatPrefix(network)})`);
  }

  const subnetSize = prefixSize({ addr: 0, len: subnetLen });
  const subnetMask = maskOf(subnetLen);
  const networkLast = network.addr + prefixSize(network) - 1;
  const boundary = (field: string): number => {
    const raw = doc[field];
    if (raw === undefined) {
      return field === 'SubnetMin' ? network.addr + subnetSize : networkLast - subnetSize + 1;
    }
    if (typeof raw !== 'string') return fail(field, `must be an IPv4 address string, got ${show(raw)}`);
    const ip = parseIp(raw);
    if (ip === undefined) return fail(field, `${show(raw)} is not an IPv4 address`);
    if (!prefixContains(network, ip)) return fail(field, `${raw} is not inside the Network ${formatPrefix(network)}`);
    if (((ip & subnetMask) >>> 0) !== ip) {
      return fail(field, `${raw} is not aligned to SubnetLen ${subnetLen} (nearest: ${formatIp((ip & subnetMask) >>> 0)})`);
    }
    return ip;
  };
  const subnetMin = boundary('SubnetMin');
  const subnetMax = boundary('SubnetMax');
  if (subnetMin > subnetMax) {
    return fail('SubnetMin', `${formatIp(subnetMin)} is above SubnetMax ${formatIp(subnetMax)}: no subnet can be leased`);
  }

  // Backend
  let port = DEFAULT_UDP_PORT;
  let directRouting = false;
  const backend = doc['Backend'];
  if (backend !== undefined && backend !== null) {
    if (!isObject(backend)) return fail('Backend', `must be a JSON object, got ${show(backend)}`);
    const type = backend['Type'];
    if (type !== undefined && (typeof type !== 'string' || type.toLowerCase() !== 'udp')) {
      return fail('Backend.Type', `${show(type)} is not supported: overlayd implements only the "udp" backend`);
    }
    const portRaw = backend['Port'];
    if (portRaw !== undefined) {
      if (typeof portRaw !== 'number' || !Number.isInteger(portRaw) || portRaw < 1 || portRaw > 65535) {
        return fail('Backend.Port', `must be an integer 1-65535, got ${show(portRaw)}`);
      }
      port = portRaw;
    }
    // flannel decodes with Go's encoding/json: field names match case-insensitively (its
    // vxlan backend's tag is "directRouting", its docs say "DirectRouting"); the last wins
    const drKey = Object.keys(backend).filter((k) => k.toLowerCase() === 'directrouting').pop();
    const drRaw = drKey === undefined ? undefined : backend[drKey];
    if (drRaw !== undefined) {
      if (typeof drRaw !== 'boolean') return fail('Backend.DirectRouting', `must be true or false, got ${show(drRaw)}`);
      directRouting = drRaw;
    }
  }

  return { network, port, subnetLen, subnetMin, subnetMax, backendType: 'udp', directRouting, ...(ipv6 ? { ipv6 } : {}) };
}

/** The IPv6 half of a config with EnableIPv6 true (flannel's CheckNetworkConfig rules). */
function parseIpv6Config(doc: Record<string, unknown>, fail: (field: string, problem: string) => never): Ipv6NetworkConfig {
  const netRaw = goField(doc, 'IPv6Network');
  if (netRaw === undefined || netRaw === null || netRaw === '') {
    return fail('IPv6Network', 'missing: EnableIPv6 is true (e.g. "IPv6Network":"fd00:10:244::/56")');
  }
  if (typeof netRaw !== 'string') return fail('IPv6Network', `must be an IPv6 CIDR string, got ${show(netRaw)}`);
  const loose = parsePrefix6(netRaw, false);
  if (!loose) return fail('IPv6Network', `${show(netRaw)} is not a valid IPv6 CIDR (addr/len)`);
  const network = parsePrefix6(netRaw, true);
  if (!network) return fail('IPv6Network', `${show(netRaw)} has host bits set (did you mean ${formatPrefix6(loose)}?)`);

  const lenRaw = goField(doc, 'IPv6SubnetLen');
  let subnetLen: number;
  if (lenRaw !== undefined && lenRaw !== null && lenRaw !== 0) {
    if (typeof lenRaw !== 'number' || !Number.isInteger(lenRaw) || lenRaw < 0) {
      return fail('IPv6SubnetLen', `must be a non-negative integer, got ${show(lenRaw)}`);
    }
    subnetLen = lenRaw;
    if (subnetLen > MAX_IPV6_SUBNET_LEN) return fail('IPv6SubnetLen', `${subnetLen} is longer than ${MAX_IPV6_SUBNET_LEN} (each subnet needs at least four addresses)`);
    if (subnetLen < network.len + 2) {
      return fail('IPv6SubnetLen', `${subnetLen} leaves fewer than four subnets in IPv6Network ${formatPrefix6(network)} (at least /${network.len + 2})`);
    }
  } else {
    if (network.len > MAX_IPV6_NETWORK_LEN) {
      return fail('IPv6Network', `${formatPrefix6(network)} is too small: the shortest useful prefix is /${MAX_IPV6_NETWORK_LEN} (at most /${MAX_IPV6_NETWORK_LEN})`);
    }
    subnetLen = network.len <= 62 ? DEFAULT_IPV6_SUBNET_LEN : network.len + 2;
  }

  const size = 1n << BigInt(128 - subnetLen);
  const mask = maskOf6(subnetLen);
  const next = network.addr + (1n << BigInt(128 - network.len));
  const boundary = (field: 'IPv6SubnetMin' | 'IPv6SubnetMax'): bigint => {
    const raw = goField(doc, field);
    let ip: bigint | undefined;
    if (raw !== undefined && raw !== null && raw !== '') {
      if (typeof raw !== 'string') return fail(field, `must be an IPv6 address string, got ${show(raw)}`);
      ip = parseIp6(raw);
      if (ip === undefined) return fail(field, `${show(raw)} is not an IPv6 address`);
    }
    // flannel: unset or :: means the default
    if (ip === undefined || ip === 0n) return field === 'IPv6SubnetMin' ? network.addr + size : next - size;
    if (!prefix6Contains(network, ip)) return fail(field, `${formatIp6(ip)} is not inside the IPv6Network ${formatPrefix6(network)}`);
    if ((ip & mask) !== ip) return fail(field, `${formatIp6(ip)} is not aligned to IPv6SubnetLen ${subnetLen} (nearest: ${formatIp6(ip & mask)})`);
    return ip;
  };
  const subnetMin = boundary('IPv6SubnetMin');
  const subnetMax = boundary('IPv6SubnetMax');
  if (subnetMin > subnetMax) {
    return fail('IPv6SubnetMin', `${formatIp6(subnetMin)} is above IPv6SubnetMax ${formatIp6(subnetMax)}: no IPv6 subnet can be leased`);
  }
  return { network, subnetLen, subnetMin, subnetMax };
}

/** A one-line description for logs: "10.244.0.0/16 /24 [10.244.1.0..10.244.255.0] udp:8285". */
export function describeNetworkConfig(c: NetworkConfig): string {
  const v6 = c.ipv6 ? ` + ${formatPrefix6(c.ipv6.network)} /${c.ipv6.subnetLen} [${formatIp6(c.ipv6.subnetMin)}..${formatIp6(c.ipv6.subnetMax)}]` : '';
  return `${formatPrefix(c.network)} /${c.subnetLen} [${formatIp(c.subnetMin)}..${formatIp(c.subnetMax)}]${v6} udp:${c.port}${c.directRouting ? ' DirectRouting' : ''}`;
}
