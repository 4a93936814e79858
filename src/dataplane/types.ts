import type { Prefix } from '../net/addr';

/** One peer route: packets for `subnet` go in UDP to `publicIp`:port (port is network-wide). */
export interface Route {
  readonly subnet: Prefix;
  /** the peer node's underlay address, uint32 */
  readonly publicIp: number;
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
