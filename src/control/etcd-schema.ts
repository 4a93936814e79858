/**
 * flannel's etcd schema, in one place: the key names under the prefix, the subnet key
 * format (`<prefix>/subnets/10.244.3.0-24`, dual-stack `<prefix>/subnets/10.244.3.0-24&fd00:10:244:3::-64`,
 * flannel's MakeSubnetKey) and the lease value (`{"PublicIP":"192.0.2.7","PublicIPv6":null}`,
 * `{"PublicIP":"192.0.2.7","PublicIPv6":"2001:db8::7"}`: Go's json.Marshal of flannel's LeaseAttrs).
 */
import { formatIp, maskOf, parseIp, type Prefix } from '../net/addr';
import { formatIp6, maskOf6, parseIp6, type Prefix6 } from '../net/addr6';

/** flanneld's default `--etcd-prefix`. */
export const DEFAULT_ETCD_PREFIX = '/coreos.com/network';

/** Normalizes a prefix the way flannel's path.Join does: no trailing slash, a leading one. */
export function normalizePrefix(prefix: string): string {
  let p = prefix.trim();
  if (!p.startsWith('/')) p = `/${p}`;
  while (p.length > 1 && p.endsWith('/')) p = p.slice(0, -1);
  return p === '/' ? '' : p;
}

/** `<prefix>/config`: the network config key. */
export function configKey(prefix: string): string {
  return `${normalizePrefix(prefix)}/config`;
}

/** `<prefix>/subnets/`: the key prefix every lease lives under (with the trailing slash). */
export function subnetsPrefix(prefix: string): string {
  return `${normalizePrefix(prefix)}/subnets/`;
}

/**
 * `10.244.3.0/24` -> `10.244.3.0-24`, with an IPv6 subnet `10.244.3.0-24&fd00:10:244:3::-64`
 * (the last path element of a lease key; flannel's MakeSubnetKey).
 */
export function subnetKeyName(subnet: Prefix, subnet6?: Prefix6): string {
  const v4 = `${formatIp(subnet.addr)}-${subnet.len}`;
  return subnet6 ? `${v4}&${formatIp6(subnet6.addr)}-${subnet6.len}` : v4;
}

/** `<prefix>/subnets/10.244.3.0-24` for the subnet 10.244.3.0/24 (`...&fd00:10:244:3::-64` with an IPv6 subnet). */
export function subnetKey(prefix: string, subnet: Prefix, subnet6?: Prefix6): string {
  return `${subnetsPrefix(prefix)}${subnetKeyName(subnet, subnet6)}`;
}

const KEY_NAME = /^(\d{1,3}\.\d{1,3}\.\d{1,3}\.\d{1,3})-(\d{1,2})(?:&.*)?$/;

/**
 * The IPv4 subnet a lease key names, or undefined when the key is not a lease key under
 * this prefix (or names no IPv4 subnet). flannel's dual-stack keys
 * (`10.244.3.0-24&fd00:0:0:3::-64`) yield their IPv4 part; host bits must be zero.
 */
export function parseSubnetKey(prefix: string, key: string): Prefix | undefined {
  const base = subnetsPrefix(prefix);
  if (!key.startsWith(base)) return undefined;
  return parseSubnetKeyName(key.slice(base.length));
}

/** `10.244.3.0-24` -> 10.244.3.0/24; undefined when malformed. */
export function parseSubnetKeyName(name: string): Prefix | undefined {
  const m = KEY_NAME.exec(name);
  if (!m) return undefined;
  const addr = parseIp(m[1] ?? '');
  const len = Number(m[2]);
  if (addr === undefined || !Number.isInteger(len) || len > 32) return undefined;
  if (((addr & maskOf(len)) >>> 0) !== addr) return undefined;
  return { addr, len };
}

/** The IPv6 part of a dual-stack key name: `&fd00:10:244:3::-64` (flannel's regexp: lower-case hex and colons). */
const KEY6_PART = /&([a-f\d:]+)-(\d{1,3})$/;

/**
 * The IPv6 subnet a lease key names (`...&fd00:10:244:3::-64`), or undefined when the key has
 * no IPv6 part or a malformed one (bad address, length over 128, host bits set).
 */
export function parseSubnetKey6(prefix: string, key: string): Prefix6 | undefined {
  const base = subnetsPrefix(prefix);
  if (!key.startsWith(base)) return undefined;
  return parseSubnetKeyName6(key.slice(base.length));
}

/** The IPv6 part of a key name; undefined when absent or malformed. */
export function parseSubnetKeyName6(name: string): Prefix6 | undefined {
  if (!KEY_NAME.test(name)) return undefined;
  const m = KEY6_PART.exec(name);
  if (!m) return undefined;
  const addr = parseIp6(m[1] ?? '');
  const len = Number(m[2]);
  if (addr === undefined || len > 128 || (addr & maskOf6(len)) !== addr) return undefined;
  return { addr, len };
}

/**
 * The lease value exactly as flannel writes it (json.Marshal of LeaseAttrs, PublicIP then
 * PublicIPv6, null when the node has none; the udp backend writes no BackendType).
 */
export function formatLeaseValue(publicIp: number, publicIpv6?: bigint, backend?: LeaseBackendData): string {
  const data = backend?.partialChecksums ? `,"BackendData":${PARTIAL_CHECKSUMS_DATA}` : '';
  return `{"PublicIP":"${formatIp(publicIp)}","PublicIPv6":${publicIpv6 === undefined ? 'null' : `"${formatIp6(publicIpv6)}"`}${data}}`;
}

/**
 * What an overlayd node advertises in its lease's BackendData (flannel's LeaseAttrs field
 * for backend specifics, json.RawMessage, after PublicIPv6; flannel's udp backend writes
 * none and ignores it, so a lease without it is a peer that takes full checksums only).
 */
export interface LeaseBackendData {
  /** --partial-checksums: this node takes inner TCP/UDP checksums left partial */
  readonly partialChecksums?: boolean;
}

/** The BackendData of a node with --partial-checksums, exactly. */
export const PARTIAL_CHECKSUMS_DATA = '{"PartialChecksums":true}';

export interface LeaseValue {
  /** the holder's underlay IPv4 address, uint32 */
  readonly publicIp: number;
  /** the holder's underlay IPv6 address (PublicIPv6); undefined when null, absent or unreadable */
  readonly publicIpv6?: bigint;
  /** why a PublicIPv6 that is present is unusable (the IPv4 part stays usable) */
  readonly badIpv6?: string;
  /** flannel's BackendType when present (other backends write one), else undefined */
  readonly backendType?: string;
  /** BackendData.PartialChecksums is true: the holder takes partial inner checksums */
  readonly partialChecksums?: true;
}

export type LeaseValueParse = { ok: true; value: LeaseValue } | { ok: false; reason: string };

/**
 * Parses a lease value written by overlayd or any flannel backend. Extra fields
 * (BackendV6Data, and BackendData other than overlayd's PartialChecksums) are ignored. A PublicIPv6 that is not an IPv6 address is
 * reported in badIpv6 and leaves the IPv4 part usable (an IPv4-only network never looks at it).
 */
export function parseLeaseValue(text: string): LeaseValueParse {
  let v: unknown;
  try {
    v = JSON.parse(text);
  } catch (err) {
    return { ok: false, reason: `invalid JSON (${err instanceof Error ? err.message : String(err)})` };
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) return { ok: false, reason: 'not a JSON object' };
  const rec = v as Record<string, unknown>;
  const ip = rec['PublicIP'];
  if (typeof ip !== 'string') return { ok: false, reason: 'PublicIP missing or not a string' };
  const publicIp = parseIp(ip);
  if (publicIp === undefined) return { ok: false, reason: `PublicIP ${JSON.stringify(ip)} is not an IPv4 address` };
  const bt = rec['BackendType'];
  const ip6 = rec['PublicIPv6'];
  let v6: { publicIpv6: bigint } | { badIpv6: string } | undefined;
  if (ip6 !== undefined && ip6 !== null) {
    const a = typeof ip6 === 'string' ? parseIp6(ip6) : undefined;
    v6 = a === undefined ? { badIpv6: `PublicIPv6 ${JSON.stringify(ip6)} is not an IPv6 address` } : { publicIpv6: a };
  }
  const bd = rec['BackendData'];
  // only the udp backend's peers (no BackendType) are forwarded to; the flag is exact: true
  const partial = typeof bd === 'object' && bd !== null && !Array.isArray(bd) && (bd as Record<string, unknown>)['PartialChecksums'] === true;
  if (!v6 && typeof bt !== 'string' && !partial) return { ok: true, value: { publicIp } };
  return { ok: true, value: { publicIp, ...v6, ...(typeof bt === 'string' ? { backendType: bt } : {}), ...(partial ? { partialChecksums: true as const } : {}) } };
}
