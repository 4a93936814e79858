/**
 * flannel's etcd schema, in one place: the key names under the prefix, the subnet key
 * format (`<prefix>/subnets/10.244.3.0-24`) and the lease value
 * (`{"PublicIP":"192.0.2.7","PublicIPv6":null}`).
 */
import { formatIp, maskOf, parseIp, type Prefix } from '../net/addr';

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

/** `10.244.3.0/24` -> `10.244.3.0-24` (the last path element of a lease key). */
export function subnetKeyName(subnet: Prefix): string {
  return `${formatIp(subnet.addr)}-${subnet.len}`;
}

/** `<prefix>/subnets/10.244.3.0-24` for the subnet 10.244.3.0/24. */
export function subnetKey(prefix: string, subnet: Prefix): string {
  return `${subnetsPrefix(prefix)}${subnetKeyName(subnet)}`;
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

/** The lease value exactly as flannel's udp backend writes it. */
export function formatLeaseValue(publicIp: number): string {
  return `{"PublicIP":"${formatIp(publicIp)}","PublicIPv6":null}`;
}

export interface LeaseValue {
  /** the holder's underlay IPv4 address, uint32 */
  readonly publicIp: number;
  /** flannel's BackendType when present (other backends write one), else undefined */
  readonly backendType?: string;
}

export type LeaseValueParse = { ok: true; value: LeaseValue } | { ok: false; reason: string };

/**
 * Parses a lease value written by overlayd or any flannel backend. Extra fields
 * (BackendType, BackendData, PublicIPv6, BackendV6Data) are ignored.
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
  return { ok: true, value: typeof bt === 'string' ? { publicIp, backendType: bt } : { publicIp } };
}
