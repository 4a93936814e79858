/**
 * The static route source (--static-config FILE): a fixed cluster without etcd.
 * File format (JSON): flannel's network config fields plus this node and its peers:
 *   { "Network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "udp", "Port": 8285},
 *     "Subnet": "10.244.1.0/24", "PublicIP": "10.99.0.1",
 *     "Peers": [ { "Subnet": "10.244.2.0/24", "PublicIP": "10.99.0.2" } ] }
 * Backend.DirectRouting (true/false) is read and checked by parseNetworkConfig, as in etcd.
 * The file is overlayd's own: a key not listed in STATIC_KEYS is refused (naming the nearest
 * known one), so a typo cannot silently drop the peers or the address.
 */
import { readFile } from 'node:fs/promises';
import { ConfigError, errorMessage } from '../errors';
import { formatPrefix, parseIp, parsePrefix, prefixCovers, prefixKey, type Prefix } from '../net/addr';
import type { Route, RouteSink } from '../dataplane/types';
import { didYouMean } from '../suggest';
import { NetworkConfigError, parseNetworkConfig } from './network-config';
import type { AcquiredLease, NetworkConfig, RouteSource, SourceStats } from './source';

export interface StaticClusterFile {
  readonly config: NetworkConfig;
  readonly lease: AcquiredLease;
  readonly peers: readonly Route[];
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** The keys a static file may hold, per object (the network config part is flannel's, minus what the udp backend ignores). */
export const STATIC_KEYS = {
  top: ['Network', 'SubnetLen', 'SubnetMin', 'SubnetMax', 'Backend', 'Subnet', 'PublicIP', 'Peers'],
  backend: ['Type', 'Port', 'DirectRouting'],
  peer: ['Subnet', 'PublicIP'],
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
  const { Subnet, PublicIP, Peers, ...netFields } = doc;
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

  const lease: AcquiredLease = { subnet: subnetIn('Subnet', Subnet), publicIp: ipIn('PublicIP', PublicIP) };
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
    peers.push({ subnet, publicIp });
  });
  return { config, lease, peers };
}

export class StaticRouteSource implements RouteSource {
  readonly kind = 'static' as const;
  private cluster: StaticClusterFile | undefined;

  constructor(private readonly file: string) {}

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
