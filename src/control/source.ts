import type { NetworkInfo, LocalLeaseInfo, RouteSink } from '../dataplane/types';
import type { Prefix } from '../net/addr';
import type { Prefix6 } from '../net/addr6';

/** The IPv6 half of a dual-stack network config (EnableIPv6 true), validated with flannel's rules. */
export interface Ipv6NetworkConfig {
  /** IPv6Network, host bits zero */
  readonly network: Prefix6;
  /** IPv6SubnetLen: 64 for networks of /62 or shorter, else the Network's length + 2 (flannel's default) */
  readonly subnetLen: number;
  /** first and last allocatable subnet network addresses (IPv6SubnetMin, IPv6SubnetMax) */
  readonly subnetMin: bigint;
  readonly subnetMax: bigint;
}

/** The network config (flannel's `<prefix>/config`), validated. */
export interface NetworkConfig extends NetworkInfo {
  readonly subnetLen: number;
  /** first and last allocatable subnet network addresses, uint32 */
  readonly subnetMin: number;
  readonly subnetMax: number;
  readonly backendType: 'udp';
  /** Backend.DirectRouting: same-link peers get a kernel route instead of the tunnel */
  readonly directRouting: boolean;
  /** EnableIPv6: the IPv6 half; undefined for an IPv4-only network (today's behaviour) */
  readonly ipv6?: Ipv6NetworkConfig;
}

export interface AcquiredLease extends LocalLeaseInfo {
  readonly subnet: Prefix;
  /** when the lease expires unless renewed; undefined for static config */
  readonly expiresAt?: Date;
  /** this node's IPv6 subnet (a dual-stack lease); undefined in an IPv4-only network */
  readonly subnet6?: Prefix6;
  /** this node's PublicIPv6 as written in the lease value; undefined when it has none */
  readonly publicIpv6?: bigint;
}

/**
 * A route source: the static file (fixed clusters) or etcd (the normal mode).
 * Lifecycle, all on the JS main thread: start() -> sync(sink) -> ... -> close().
 */
export interface RouteSource {
  readonly kind: 'static' | 'etcd';
  /** Resolves once the network config is known and this node holds its lease. */
  start(): Promise<{ config: NetworkConfig; lease: AcquiredLease }>;
  /**
   * Delivers every peer route (this node's own lease excluded) to `sink`, then keeps it in
   * sync with later changes. Resolves once the first full set has been applied.
   */
  sync(sink: RouteSink): Promise<void>;
  /**
   * Registers the handler for unrecoverable errors after start (e.g. this node's subnet is
   * now held by another node). The daemon shuts down and exits non-zero on it.
   */
  onFatal(handler: (err: Error) => void): void;
  /** Control-plane state for metrics and health; read at scrape time. */
  stats(): SourceStats;
  /** Stops watching and renewing; keeps the lease in etcd so a restart reuses the subnet. */
  close(): Promise<void>;
}

export interface SourceStats {
  /** etcd connection up; undefined for the static source */
  readonly connected?: boolean;
  /** times the leases were re-listed after the first list (watch broken, or periodic) */
  readonly resyncs: number;
  /** false while the etcd member we talk to has no leader (etcd source only) */
  readonly leader?: boolean;
  /** when the leases were last re-listed (etcd source only; undefined before any) */
  readonly lastResyncAt?: Date;
  /** current lease expiry; undefined when it never expires */
  readonly leaseExpiresAt?: Date;
  /** false once this node's lease is known lost (expired/deleted and not yet re-acquired) */
  readonly leaseValid: boolean;
}
