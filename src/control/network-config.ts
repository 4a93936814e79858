/**
 * flannel's network config (`<prefix>/config`): parsing and validation.
 *
 *   {"Network":"10.244.0.0/16","SubnetLen":24,"SubnetMin":"10.244.1.0",
 *    "SubnetMax":"10.244.255.0","Backend":{"Type":"udp","Port":8285}}
 *
 * Defaults as flannel's: SubnetLen 24, SubnetMin the second subnet of the Network,
 * SubnetMax the last one, Backend.Type udp, Port 8285. Backend.DirectRouting (boolean,
 * default false, spelled as flannel's vxlan backend spells it): route same-link peers
 * without encapsulation (src/net/direct-routes.ts). Fields of flannel's config that the
 * udp backend does not use (EnableIPv6, ...) are ignored, as are unknown ones (flanneld ignores
 * them too, and nodes share this key); networkConfigWarnings() names the unknown ones for a log line.
 */
import { ConfigError } from '../errors';
import { didYouMean } from '../suggest';
import { formatIp, formatPrefix, maskOf, parseIp, parsePrefix, prefixContains, prefixSize } from '../net/addr';
import type { NetworkConfig } from './source';

export type { NetworkConfig } from './source';

export const DEFAULT_SUBNET_LEN = 24;
export const MAX_SUBNET_LEN = 30;
export const DEFAULT_UDP_PORT = 8285;

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
  return Object.keys(doc).filter((k) => !FLANNEL_CONFIG_KEYS.includes(k))
    .map((k) => `unknown key "${k}" in ${key} (ignored, as flanneld does)${didYouMean(k, FLANNEL_CONFIG_KEYS)}`);
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

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

  return { network, port, subnetLen, subnetMin, subnetMax, backendType: 'udp', directRouting };
}

/** A one-line description for logs: "10.244.0.0/16 /24 [10.244.1.0..10.244.255.0] udp:8285". */
export function describeNetworkConfig(c: NetworkConfig): string {
  return `${formatPrefix(c.network)} /${c.subnetLen} [${formatIp(c.subnetMin)}..${formatIp(c.subnetMax)}] udp:${c.port}${c.directRouting ? ' DirectRouting' : ''}`;
}
