import type { Route, Route6, RouteSink, NetworkInfo, LocalLeaseInfo } from './types';
import type { EngineKind } from '../config';
import type { Logger } from '../ops/log';
import type { Prefix6 } from '../net/addr6';

/**
 * Forwarding counters, the same names for every engine (DESIGN.md). Units: packets unless
 * the name ends in _bytes. Monotonic for the life of the engine.
 */
export const ENGINE_COUNTERS = [
  'tun_rx', //           packets read from the TUN
  'tx', //               datagrams sent to peers
  'tx_bytes', //         payload bytes sent to peers
  'rx', //               datagrams received on the UDP socket (all, before checks)
  'rx_bytes', //         payload bytes received
  'tun_tx', //           packets written into the TUN (forwarded inbound + ICMP errors)
  'icmp_sent', //        ICMP errors generated (net unreachable, time exceeded, fragmentation needed / packet too big)
  'drop_no_route', //    outbound: no route for the destination
  'drop_ttl', //         TTL would reach 0
  'drop_malformed', //   not a well-formed IPv4 packet (either direction)
  'drop_unknown_peer', // inbound: sender is not a known peer's PublicIP:port
  'drop_spoofed', //     inbound: inner source not inside the sending peer's subnet
  'drop_wrong_dst', //   inbound: inner destination not inside this node's subnet
  'drop_too_big', //     inbound: packet larger than the TUN MTU (with DF / IPv6: answered over UDP)
  'drop_ring_full', //   the TUN-bound ring was full
  'tx_error', //         UDP send failed
  'drop_icmp_ratelimit', // ICMP errors not sent: the engine's rate limit (icmp-ratelimit-rate/-burst)
] as const;
export type EngineCounter = (typeof ENGINE_COUNTERS)[number];
export type EngineCounters = Record<EngineCounter, number>;

export function zeroCounters(): EngineCounters {
  return Object.fromEntries(ENGINE_COUNTERS.map((n) => [n, 0])) as EngineCounters;
}

/** Adds per-queue counters into one set. */
export function sumCounters(list: readonly EngineCounters[]): EngineCounters {
  const c = zeroCounters();
  for (const q of list) for (const n of ENGINE_COUNTERS) c[n] += q[n];
  return c;
}

export interface EngineOptions {
  readonly tunName: string;
  /** the TUN's address (the lease's network address), uint32 */
  readonly tunAddress: number;
  /** bytes */
  readonly tunMtu: number;
  readonly network: NetworkInfo;
  readonly lease: LocalLeaseInfo;
  readonly logger: Logger;
  /** forwarding threads = TUN queues = UDP sockets of the native engine, 1..64 (default 1); the js engine has one */
  readonly queues?: number;
  /** ICMP error token bucket (default 1000 per second, burst 50; rate 0 = no limit) */
  readonly icmpRateLimit?: { readonly rate: number; readonly burst: number };
  /** offloads the native engine should use (default none); the js engine has none */
  readonly offloads?: { readonly tun: boolean; readonly udpGso: boolean; readonly udpGro: boolean };
  /**
   * native engine: leave inner TCP/UDP checksums partial toward peers whose route has
   * partialChecksums (--partial-checksums; default false: full checksums to every peer)
   */
  readonly partialChecksums?: boolean;
  /** the underlay address the UDP socket(s) bind to (uint32; undefined = 0.0.0.0), so datagrams leave with the source peers expect */
  readonly bindAddress?: number;
  /** IPv6 in the overlay (a dual-stack lease); undefined = IPv4 only, today's behaviour byte for byte */
  readonly ipv6?: EngineIpv6Options;
}

/** The IPv6 half of a dual-stack node, as the data plane needs it. */
export interface EngineIpv6Options {
  /** the cluster IPv6Network */
  readonly network: Prefix6;
  /** this node's IPv6 subnet: inbound inner IPv6 destinations must be inside it */
  readonly subnet: Prefix6;
  /** the TUN's IPv6 address (the subnet's network address): source of ICMPv6 errors */
  readonly tunAddress: bigint;
  /**
   * The IPv6 underlay: a second UDP socket (per queue) bound to [underlayBind]:port (0n = ::),
   * used for Route6 entries that carry publicIpv6. Undefined: no IPv6 socket, inner IPv6
   * rides the IPv4 underlay only.
   */
  readonly underlayBind?: bigint;
}

/** Offloads in force: on = asked for, taken by the kernel at start, and on again on every queue that refused it since (fallbacks = reenables). */
export interface OffloadState {
  readonly tun: boolean;
  readonly udpGso: boolean;
  readonly udpGro: boolean;
  /** times the kernel refused one at run time (the queue then went on without it for a back-off) */
  readonly fallbacks: { readonly udpGso: number; readonly tunGro: number };
  /** times one came back on after its back-off */
  readonly reenables: { readonly udpGso: number; readonly tunGro: number };
  /** how much they did: super-packets read from / written to the TUN, UDP_SEGMENT sends, UDP_GRO receives of several datagrams */
  readonly activity: { readonly tunGsoReads: number; readonly tunUsoReads: number; readonly tunGroWrites: number; readonly udpGsoSends: number; readonly udpGroRecvs: number };
  /**
   * --partial-checksums: on here, datagrams sent with the inner checksum left partial (to
   * peers that advertise it), packets received so and written for the kernel to finish
   */
  readonly partialChecksums: { readonly enabled: boolean; readonly sent: number; readonly received: number };
}

export const NO_OFFLOADS: OffloadState = {
  tun: false, udpGso: false, udpGro: false, fallbacks: { udpGso: 0, tunGro: 0 }, reenables: { udpGso: 0, tunGro: 0 }, activity: { tunGsoReads: 0, tunUsoReads: 0, tunGroWrites: 0, udpGsoSends: 0, udpGroRecvs: 0 },
  partialChecksums: { enabled: false, sent: 0, received: 0 },
};

/**
 * A forwarding engine. Lifecycle on the JS main thread: open() creates the TUN device (so
 * the daemon can configure the link), start() begins forwarding, close() stops it and
 * removes the TUN. RouteSink calls may come at any time after open().
 */
export interface Engine extends RouteSink {
  readonly kind: EngineKind;
  /** IPv6 routes; route sources call them only when the engine was opened with `ipv6` */
  upsert6(route: Route6): void;
  remove6(subnet: Prefix6): void;
  /** the TUN device name, valid after open() */
  readonly tunName: string;
  open(): Promise<void>;
  start(): Promise<void>;
  /** summed over the queues */
  counters(): EngineCounters;
  /** per forwarding queue (the js engine has one) */
  queueCounters(): EngineCounters[];
  routes(): Route[];
  /** the IPv6 routes in force ([] without `ipv6`) */
  routes6(): Route6[];
  /** false once the engine failed or was closed */
  alive(): boolean;
  /** the offloads in force (none for the js engine) */
  offloads(): OffloadState;
  /** Registers the handler for a fatal data-plane error (the daemon exits non-zero). */
  onFatal(handler: (err: Error) => void): void;
  close(): Promise<void>;
}
