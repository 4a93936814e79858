import type { Prefix } from '../net/addr';
import type { Prefix6 } from '../net/addr6';

/** One peer route: packets for `subnet` go in UDP to `publicIp`:port (port is network-wide). */
export interface Route {
  readonly subnet: Prefix;
  /** the peer node's underlay address, uint32 */
  readonly publicIp: number;
  /**
   * the peer advertised partial inner checksums (lease BackendData PartialChecksums); a
   * native engine with --partial-checksums then leaves them partial toward it
   */
  readonly partialChecksums?: true;
}

/** `a` and `b` name the same peer, advertising the same (a changed capability is a change to publish). */
export function samePeer(a: Route, b: Route): boolean {
  return a.publicIp === b.publicIp && a.partialChecksums === b.partialChecksums;
}

/**
 * One peer's IPv6 subnet (dual-stack lease). Inner IPv6 packets for `subnet` go in UDP to
 * [publicIpv6]:port over the IPv6 underlay when `publicIpv6` is set, else to publicIp:port
 * over IPv4. The route source decides (--ipv6-underlay, and whether this node has an IPv6
 * underlay): the engine only follows the route. Inbound, inner IPv6 from `subnet` is
 * accepted from either of the peer's addresses given here.
 */
export interface Route6 {
  readonly subnet: Prefix6;
  /** the peer node's IPv4 underlay address, uint32 */
  readonly publicIp: number;
  /** the peer node's IPv6 underlay address, when inner IPv6 should ride the IPv6 underlay */
  readonly publicIpv6?: bigint;
}

/**
 * Where a route source delivers routes. Implemented by the data plane (engines).
 * Calls come from the JS main thread only; each call takes effect for the next packet.
 */
export interface RouteSink {
  /** Adds the route, or changes the peer of an existing route for the same subnet. */
  upsert(route: Route): void;
  /** Removes the route for exactly this subnet; unknown subnets are ignored. */
  remove(subnet: Prefix): void;
  /** IPv6 (dual-stack) routes: as upsert/remove. Sinks without them take IPv4 routes only (DirectRouting). */
  upsert6?(route: Route6): void;
  remove6?(subnet: Prefix6): void;
}

/** The cluster network as the data plane needs it. */
export interface NetworkInfo {
  /** the cluster Network, e.g. 10.244.0.0/16 */
  readonly network: Prefix;
  /** UDP port P, used as both source and destination port on the wire */
  readonly port: number;
}

/** This node's lease as the data plane needs it. */
export interface LocalLeaseInfo {
  /** this node's subnet, e.g. 10.244.3.0/24 */
  readonly subnet: Prefix;
  /** this node's underlay address, uint32 */
  readonly publicIp: number;
}
