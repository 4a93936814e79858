/**
 * The static route source (--static-config FILE): a fixed cluster without etcd.
 * File format (JSON): flannel's network config fields plus this node and its peers:
 *   { "Network": "10.244.0.0/16", "SubnetLen": 24, "Backend": {"Type": "udp", "Port": 8285},
 *     "Subnet": "10.244.1.0/24", "PublicIP": "10.99.0.1",
 *     "Peers": [ { "Subnet": "10.244.2.0/24", "PublicIP": "10.99.0.2" } ] }
 * Backend.DirectRouting (true/false) is read and checked by parseNetworkConfig, as in etcd.
 */
import { readFile } from 'node:fs/promises';
import { ConfigError, errorMessage } from '../errors';
import { formatPrefix, parseIp, parsePrefix, prefixCovers, prefixKey, type Prefix } from '../net/addr';
import type { Route, RouteSink } from '../dataplane/types';
import { parseNetworkConfig } from './network-config';
import type { AcquiredLease, NetworkConfig, RouteSource, SourceStats } from './source';

export interface StaticClusterFile {
  readonly config: NetworkConfig;
  readonly lease: AcquiredLease;
  readonly peers: readonly Route[];
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
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
  const { Subnet, PublicIP, Peers, ...netFields } = doc;
  const config = parseNetworkConfig(JSON.stringify(netFields), file);

  const subnetIn = (field: string, v: unknown): Prefix => {
    const p = typeof v === 'string' ? parsePrefix(v) : undefined;
    if (!p) throw new ConfigError(`${file}: ${field}: ${JSON.stringify(v)} is not an IPv4 subnet like 10.244.1.0/24`);
    if (!prefixCovers(config.network, p) || p.len !== config.subnetLen) {
      throw new ConfigError(`${file}: ${field}: ${formatPrefix(p)} is not a /${config.subnetLen} inside Network ${formatPrefix(config.network)}`);
    }
    return p;
  };
  const ipIn = (field: string, v: unknown): number => {
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
