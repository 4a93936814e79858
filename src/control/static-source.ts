/**
 * The static route source (--static-config FILE): a fixed cluster without etcd.
 * File format (JSON): flannel's network config fields plus this node and its peers:
 *   { "Network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "udp", "Port": 8285},
 *     "Subnet": "10.244.1.0/24", "PublicIP": "10.99.0.1",
 *     "Peers": [ { "Subnet": "10.244.2.0/24", "PublicIP": "10.99.0.2" } ] }
 * Backend.DirectRouting (true/false) is read and checked by parseNetworkConfig, as in etcd.
 * Dual-stack: flannel's EnableIPv6/IPv6Network/IPv6SubnetLen/IPv6SubnetMin/IPv6SubnetMax, plus
 * this node's "IPv6Subnet" (required with EnableIPv6) and "PublicIPv6" (optional), and per
 * peer the same two (a peer without IPv6Subnet is IPv4-only):
 *   { ..., "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56",
 *     "IPv6Subnet": "fd00:10:244:1::/64", "PublicIPv6": "2001:db8::1",
 *     "Peers": [ { "Subnet": "10.244.2.0/24", "PublicIP": "10.99.0.2",
 *                  "IPv6Subnet": "fd00:10:244:2::/64", "PublicIPv6": "2001:db8::2" } ] }
 * A peer may carry "BackendData": {"PartialChecksums": true}, as its lease value would
 * (it runs with --partial-checksums).
 * The file is overlayd's own: a key not listed in STATIC_KEYS is refused (naming the nearest
 * known one), so a typo cannot silently drop the peers or the address.
 */
import { readFile } from 'node:fs/promises';
import { ConfigError, errorMessage } from '../errors';
import { formatPrefix, parseIp, parsePrefix, prefixCovers, prefixKey, type Prefix } from '../net/addr';
import type { Route, Route6, RouteSink } from '../dataplane/types';
import { formatPrefix6, parseIp6, parsePrefix6, prefix6Covers, prefix6Key, type Prefix6 } from '../net/addr6';
import type { Ipv6UnderlayMode } from '../config';
import { didYouMean } from '../suggest';
import { NetworkConfigError, parseNetworkConfig } from './network-config';
import type { AcquiredLease, NetworkConfig, RouteSource, SourceStats } from './source';

export interface StaticClusterFile {
  readonly config: NetworkConfig;
  readonly lease: AcquiredLease;
  readonly peers: readonly Route[];
  /** dual-stack peers' IPv6 subnets, with the peer's PublicIPv6 when it has one (the underlay rule is applied at sync) */
  readonly peers6: readonly Route6[];
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The keys a static file may hold, per object (the network config part is flannel's, minus what the udp backend ignores). */
export const STATIC_KEYS = {
  top: [
    'Network', 'SubnetLen', 'SubnetMin', 'SubnetMax', 'Backend', 'Subnet', 'PublicIP', 'Peers',
    'EnableIPv4', 'EnableIPv6', 'IPv6Network', 'IPv6SubnetLen', 'IPv6SubnetMin', 'IPv6SubnetMax', 'IPv6Subnet', 'PublicIPv6',
  ],
  backend: ['Type', 'Port', 'DirectRouting'],
  peer: ['Subnet', 'PublicIP', 'IPv6Subnet', 'PublicIPv6', 'BackendData'],
  /** a peer's BackendData: what it advertises, as in its lease value (see etcd-schema.ts) */
  backendData: ['PartialChecksums'],
} as const;

/** Refuses a key of `obj` not in `known`: `unknown key "Peers[0].PublicIp" in FILE: did you mean "Peers[0].PublicIP"?`. */
function checkKeys(obj: Record<string, unknown>, known: readonly string[], path: string, file: string): void {
  for (const key of Object.keys(obj)) {
    if (known.includes(key)) continue;
    throw new ConfigError(`unknown key "${path}${key}" in ${file}${didYouMean(key, known).replace(/"(.*)"/, `"${path}$1"`)}`);
  }
}

/** Validates the parsed file; every error names the file and the field. */
export function parseStaticCluster(text: string, file: string): StaticClusterFile {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    throw new ConfigError(`${file}: invalid JSON: ${errorMessage(err)}`);
  }
  if (!isObject(doc)) throw new ConfigError(`${file}: must be a JSON object`);
  checkKeys(doc, STATIC_KEYS.top, '', file);
  if (isObject(doc['Backend'])) checkKeys(doc['Backend'], STATIC_KEYS.backend, 'Backend.', file);
  const { Subnet, PublicIP, Peers, IPv6Subnet, PublicIPv6, ...netFields } = doc;
  if (netFields['Network'] === undefined) throw new ConfigError(`${file}: Network is missing (e.g. "Network": "10.244.0.0/16")`);
  let config: NetworkConfig;
  try {
    config = parseNetworkConfig(JSON.stringify(netFields), file);
  } catch (err) {
    // the network config parser speaks of etcd keys; here it is a file
    if (err instanceof NetworkConfigError) {
      const where = `invalid network config in etcd key ${err.key}: ${err.field ? `${err.field}: ` : ''}`;
      const problem = err.message.startsWith(where) ? err.message.slice(where.length) : err.message;
      throw new ConfigError(`${file}: ${err.field ? `${err.field}: ` : ''}${problem}`, { cause: err });
    }
    throw err;
  }

  const subnetIn = (field: string, v: unknown): Prefix => {
    if (v === undefined) throw new ConfigError(`${file}: ${field} is missing (e.g. "Subnet": "10.244.1.0/24")`);
    const p = typeof v === 'string' ? parsePrefix(v) : undefined;
    if (!p) throw new ConfigError(`${file}: ${field}: ${JSON.stringify(v)} is not an IPv4 subnet like 10.244.1.0/24`);
    if (!prefixCovers(config.network, p) || p.len !== config.subnetLen) {
      throw new ConfigError(`${file}: ${field}: ${formatPrefix(p)} is not a /${config.subnetLen} inside Network ${formatPrefix(config.network)}`);
    }
    return p;
  };
  const ipIn = (field: string, v: unknown): number => {
    if (v === undefined) throw new ConfigError(`${file}: ${field} is missing (e.g. "PublicIP": "192.0.2.7")`);
    const n = typeof v === 'string' ? parseIp(v) : undefined;
    if (n === undefined) throw new ConfigError(`${file}: ${field}: ${JSON.stringify(v)} is not an IPv4 address`);
    return n;
  };

  const v6 = config.ipv6;
  const subnet6In = (field: string, v: unknown): Prefix6 | undefined => {
    if (v === undefined) return undefined;
    if (!v6) throw new ConfigError(`${file}: ${field}: needs "EnableIPv6": true (and IPv6Network)`);
    const p = typeof v === 'string' ? parsePrefix6(v) : undefined;
    if (!p) throw new ConfigError(`${file}: ${field}: ${JSON.stringify(v)} is not an IPv6 subnet like fd00:10:244:1::/64`);
    if (!prefix6Covers(v6.network, p) || p.len !== v6.subnetLen) {
      throw new ConfigError(`${file}: ${field}: ${formatPrefix6(p)} is not a /${v6.subnetLen} inside IPv6Network ${formatPrefix6(v6.network)}`);
    }
    return p;
  };
  const ip6In = (field: string, v: unknown): bigint | undefined => {
    if (v === undefined) return undefined;
    if (!v6) throw new ConfigError(`${file}: ${field}: needs "EnableIPv6": true (and IPv6Network)`);
    const a = typeof v === 'string' ? parseIp6(v) : undefined;
    if (a === undefined) throw new ConfigError(`${file}: ${field}: ${JSON.stringify(v)} is not an IPv6 address`);
    return a;
  };
  const subnet6 = subnet6In('IPv6Subnet', IPv6Subnet);
  const publicIpv6 = ip6In('PublicIPv6', PublicIPv6);
  if (v6 && !subnet6) throw new ConfigError(`${file}: IPv6Subnet is missing: EnableIPv6 is true (e.g. "IPv6Subnet": "fd00:10:244:1::/64")`);
  const lease: AcquiredLease = {
    subnet: subnetIn('Subnet', Subnet), publicIp: ipIn('PublicIP', PublicIP),
    ...(subnet6 ? { subnet6 } : {}), ...(publicIpv6 !== undefined ? { publicIpv6 } : {}),
  };
  const seen6 = new Map<string, string>(subnet6 ? [[prefix6Key(subnet6), 'IPv6Subnet']] : []);
  const peers6: Route6[] = [];
  if (Peers !== undefined && !Array.isArray(Peers)) throw new ConfigError(`${file}: Peers: must be an array`);
  const seen = new Map<string, string>([[prefixKey(lease.subnet), 'Subnet']]);
  const peers: Route[] = [];
  (Peers ?? []).forEach((peer: unknown, i: number) => {
    const field = `Peers[${i}]`;
    if (!isObject(peer)) throw new ConfigError(`${file}: ${field}: must be an object with Subnet and PublicIP`);
    checkKeys(peer, STATIC_KEYS.peer, `${field}.`, file);
    const subnet = subnetIn(`${field}.Subnet`, peer['Subnet']);
    const publicIp = ipIn(`${field}.PublicIP`, peer['PublicIP']);
    const other = seen.get(prefixKey(subnet));
    if (other !== undefined) throw new ConfigError(`${file}: ${field}.Subnet: ${formatPrefix(subnet)} is already used by ${other}`);
    seen.set(prefixKey(subnet), field);
    if (publicIp === lease.publicIp) throw new ConfigError(`${file}: ${field}.PublicIP: equals this node's PublicIP`);
    const bd = peer['BackendData'];
    let partial = false;
    if (bd !== undefined) {
      if (!isObject(bd)) throw new ConfigError(`${file}: ${field}.BackendData: must be an object like {"PartialChecksums": true}`);
      checkKeys(bd, STATIC_KEYS.backendData, `${field}.BackendData.`, file);
      const pc = bd['PartialChecksums'];
      if (pc !== undefined && typeof pc !== 'boolean') throw new ConfigError(`${file}: ${field}.BackendData.PartialChecksums: ${JSON.stringify(pc)} is not true or false`);
      partial = pc === true;
    }
    peers.push(partial ? { subnet, publicIp, partialChecksums: true } : { subnet, publicIp });
    const peerSubnet6 = subnet6In(`${field}.IPv6Subnet`, peer['IPv6Subnet']);
    const peerIpv6 = ip6In(`${field}.PublicIPv6`, peer['PublicIPv6']);
    if (peerIpv6 !== undefined && !peerSubnet6) throw new ConfigError(`${file}: ${field}.PublicIPv6: given without ${field}.IPv6Subnet`);
    if (peerSubnet6) {
      const other6 = seen6.get(prefix6Key(peerSubnet6));
      if (other6 !== undefined) throw new ConfigError(`${file}: ${field}.IPv6Subnet: ${formatPrefix6(peerSubnet6)} is already used by ${other6}`);
      seen6.set(prefix6Key(peerSubnet6), `${field}.IPv6Subnet`);
      peers6.push(peerIpv6 !== undefined ? { subnet: peerSubnet6, publicIp, publicIpv6: peerIpv6 } : { subnet: peerSubnet6, publicIp });
    }
  });
  return { config, lease, peers, peers6 };
}

export class StaticRouteSource implements RouteSource {
  readonly kind = 'static' as const;
  private cluster: StaticClusterFile | undefined;

  /** `ipv6Underlay`: --ipv6-underlay (default auto) */
  constructor(private readonly file: string, private readonly ipv6Underlay: Ipv6UnderlayMode = 'auto') {}

  async start(): Promise<{ config: NetworkConfig; lease: AcquiredLease }> {
    let text: string;
    try {
      text = await readFile(this.file, 'utf8');
    } catch (err) {
      throw new ConfigError(`--static-config ${this.file}: cannot read: ${errorMessage(err)}`);
    }
    this.cluster = parseStaticCluster(text, this.file);
    return { config: this.cluster.config, lease: this.cluster.lease };
  }

  async sync(sink: RouteSink): Promise<void> {
    if (!this.cluster) throw new Error('StaticRouteSource.sync() before start()');
    for (const route of this.cluster.peers) sink.upsert(route);
    // inner IPv6 rides the IPv6 underlay only when both ends have a PublicIPv6 and the flag allows it
    const v6Underlay = this.ipv6Underlay === 'auto' && this.cluster.lease.publicIpv6 !== undefined;
    for (const r of this.cluster.peers6) sink.upsert6?.(v6Underlay ? r : { subnet: r.subnet, publicIp: r.publicIp });
  }

  stats(): SourceStats {
    return { resyncs: 0, leaseValid: this.cluster !== undefined };
  }

  onFatal(): void {
    // a static file never fails after start
  }

  async close(): Promise<void> {
    this.cluster = undefined;
  }
}
