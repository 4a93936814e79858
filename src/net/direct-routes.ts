/**
 * DirectRouting (network config `Backend.DirectRouting: true`): a peer whose PublicIP is on
 * the same link as this node's underlay interface gets a kernel route
 *   `<peer subnet> via <PublicIP> dev <underlay> proto 85`
 * and its pods are reached without encapsulation; every other peer keeps the UDP path.
 *
 * Same-link test, as flannel's (pkg/ip/iface.go DirectRouting: RouteGet(PublicIP) is one
 * route without a gateway): the longest-prefix match for the PublicIP in the main table is
 * a route without a gateway, on the underlay device. The table is read once per batch of
 * lease changes, so a change of the underlay's addressing is seen by the next batch.
 *
 * Ownership: every route this module adds carries protocol OVERLAYD_RT_PROTO, and it only
 * ever deletes routes with that protocol (`ip route del ... proto 85`, `ip route flush proto
 * 85`). A prefix already routed by someone else (another protocol) is left alone and that
 * peer stays on the UDP path. Stale routes of a crashed instance are flushed at start (one
 * overlayd per network namespace: the daemon's instance lock), all of ours on close.
 *
 * The forwarding engine keeps every peer route, direct ones included: the kernel never hands
 * it a packet for a direct subnet (the /SubnetLen route beats the Network route on the TUN),
 * but inbound datagrams from a same-link peer that does not route directly (flannel's udp
 * backend, an older overlayd) must still pass its known-peer check; and while a kernel route
 * cannot be installed, the tunnel carries that peer.
 *
 * All methods run on the JS main thread. upsert()/remove() are synchronous (RouteSink);
 * the ip(8) commands they cause run in order on one queue; idle() resolves once it is empty.
 */
import type { Route, RouteSink } from '../dataplane/types';
import { errorMessage } from '../errors';
import type { Logger } from '../ops/log';
import { formatIp, formatPrefix, parsePrefix, prefixContains, prefixCovers, prefixKey, type Prefix } from './addr';
import { ip as systemIp, systemLinkOps } from './link';
import { readFile } from 'node:fs/promises';

/**
 * The route protocol number marking overlayd's routes (rtnetlink `rtm_protocol`). Not in
 * iproute2's /etc/iproute2/rt_protos (0-4 reserved, 8-16, 18, 42, 99, 186-192 taken); name
 * it with `echo "85 overlayd" > /etc/iproute2/rt_protos.d/overlayd.conf`.
 */
export const OVERLAYD_RT_PROTO = 85;

/** How a peer's pods are reached: a kernel route on the underlay, or the UDP tunnel. */
export type RouteKind = 'direct' | 'udp';

/** One IPv4 route of the main table, as `ip -j route show` prints it. */
export interface KernelRoute {
  readonly dst: string;
  readonly gateway?: string;
  readonly dev?: string;
  readonly protocol?: string;
  readonly metric?: number;
  readonly type?: string;
}

/** The system calls the module makes; unit tests substitute them. */
export interface DirectRouteOps {
  ip(args: readonly string[]): Promise<string>;
  /** the content of /proc/sys/<path>, or undefined when it cannot be read */
  readSysctl(path: string): Promise<string | undefined>;
  /** writes /proc/sys/<path>; resolves false when the file does not exist */
  writeSysctl(path: string, value: string): Promise<boolean>;
}

export const systemDirectRouteOps: DirectRouteOps = {
  ip: systemIp,
  readSysctl: (rel) => readFile(`/proc/sys/${rel}`, 'utf8').then((s) => s.trim(), () => undefined),
  writeSysctl: systemLinkOps.sysctl,
};

function parseDst(dst: string): Prefix | undefined {
  if (dst === 'default') return { addr: 0, len: 0 };
  return parsePrefix(dst.includes('/') ? dst : `${dst}/32`, false);
}

function isOurs(r: KernelRoute): boolean {
  return r.protocol === String(OVERLAYD_RT_PROTO);
}

/**
 * flannel's same-link test against a snapshot of the main table: the best route to `peer`
 * (longest prefix, then lowest metric; overlayd's own routes ignored) has no gateway and
 * leaves through `underlay`.
 */
export function isOnLink(peer: number, table: readonly KernelRoute[], underlay: string): boolean {
  let best: { r: KernelRoute; len: number; metric: number } | undefined;
  for (const r of table) {
    if (isOurs(r) || (r.type !== undefined && r.type !== 'unicast')) continue;
    const p = parseDst(r.dst);
    if (!p || !prefixContains(p, peer)) continue;
    const metric = r.metric ?? 0;
    if (!best || p.len > best.len || (p.len === best.len && metric < best.metric)) best = { r, len: p.len, metric };
  }
  return best !== undefined && best.r.gateway === undefined && best.r.dev === underlay;
}

/** Whether `addr` is one of this host's own (a `local` route of the local table contains it). */
export function isLocal(addr: number, local: readonly KernelRoute[]): boolean {
  return local.some((r) => {
    const p = parseDst(r.dst);
    return r.type === 'local' && p !== undefined && prefixContains(p, addr);
  });
}

/**
 * Deletes every route with our protocol (a crashed instance's, possibly with DirectRouting
 * on then and off now); resolves how many there were. One `ip route show` when there are none.
 */
export async function removeStaleDirectRoutes(logger: Logger, ops: DirectRouteOps = systemDirectRouteOps): Promise<number> {
  const stale = JSON.parse(await ops.ip(['-j', '-4', 'route', 'show', 'table', 'main', 'proto', String(OVERLAYD_RT_PROTO)])) as KernelRoute[];
  if (stale.length === 0) return 0;
  await ops.ip(['-4', 'route', 'flush', 'table', 'main', 'proto', String(OVERLAYD_RT_PROTO)]);
  logger.info({ routes: stale.map((r) => `${r.dst} via ${r.gateway ?? '-'}`), proto: OVERLAYD_RT_PROTO }, 'removed direct routes left by an earlier instance');
  return stale.length;
}

export interface DirectRoutesOptions {
  /** the underlay interface name */
  readonly underlay: string;
  /** the TUN device (configured already): its rp_filter is relaxed from strict to loose */
  readonly tun: string;
  /** this node's lease: a peer subnet overlapping it never gets a kernel route (it would take this node's own pods' traffic to the link) */
  readonly ownSubnet?: Prefix;
  readonly logger: Logger;
  readonly ops?: DirectRouteOps;
}

export class DirectRoutes implements RouteSink {
  private readonly ops: DirectRouteOps;
  /** every peer route the source wants, by prefixKey */
  private readonly wanted = new Map<string, Route>();
  /** kernel routes in force (added by us), by prefixKey: the PublicIP they go via */
  private readonly installed = new Map<string, { subnet: Prefix; via: number }>();
  /** keys whose kernel route may need to change */
  private readonly dirty = new Set<string>();
  private queue: Promise<void> = Promise.resolve();
  private scheduled = false;
  private closed = false;

  private constructor(private readonly o: DirectRoutesOptions) {
    this.ops = o.ops ?? systemDirectRouteOps;
  }

  /**
   * Removes routes a crashed instance left behind (our protocol), warns when rp_filter is
   * off on the underlay, and turns strict rp_filter (1) on the TUN into loose (2): a
   * same-link peer without DirectRouting still tunnels to us while our route to its subnet
   * is on the underlay, and strict mode would drop its packets as they leave the TUN (the
   * engine has checked them already: known peer, source inside that peer's subnet).
   */
  static async start(o: DirectRoutesOptions): Promise<DirectRoutes> {
    const d = new DirectRoutes(o);
    await removeStaleDirectRoutes(o.logger, d.ops);
    const read = async (dev: string) => Number(await d.ops.readSysctl(`net/ipv4/conf/${dev}/rp_filter`) ?? 0);
    const all = await read('all');
    // the kernel applies max(all, dev)
    if (Math.max(all, await read(o.tun)) === 1) {
      await d.ops.writeSysctl(`net/ipv4/conf/${o.tun}/rp_filter`, '2');
      o.logger.info({ tun: o.tun }, `rp_filter on ${o.tun}: strict -> loose, for same-link peers that tunnel to us`);
    }
    const rpFilter = Math.max(all, await read(o.underlay));
    o.logger.info({ underlay: o.underlay, proto: OVERLAYD_RT_PROTO, rpFilter }, 'DirectRouting on: same-link peers get kernel routes');
    if (rpFilter === 0) {
      o.logger.warn({ underlay: o.underlay }, `rp_filter is off on ${o.underlay}: packets routed in from the link are not checked against their source (see README, DirectRouting)`);
    }
    return d;
  }

  upsert(route: Route): void {
    const k = prefixKey(route.subnet);
    this.wanted.set(k, route);
    this.mark(k);
  }

  remove(subnet: Prefix): void {
    const k = prefixKey(subnet);
    this.wanted.delete(k);
    this.mark(k);
  }

  /** 'direct' while our kernel route for `subnet` is in force, else 'udp'. */
  kindOf(subnet: Prefix): RouteKind {
    return this.installed.has(prefixKey(subnet)) ? 'direct' : 'udp';
  }

  /** Number of peers routed directly (kernel routes in force). */
  directCount(): number {
    return this.installed.size;
  }

  /** Resolves once every change given so far has reached the kernel (or failed, logged). */
  async idle(): Promise<void> {
    for (let i = 0; i < 1000 && (this.scheduled || this.dirty.size > 0); i++) await this.queue;
    await this.queue;
  }

  /** Stops applying changes and deletes every route with our protocol. */
  async close(): Promise<void> {
    this.closed = true;
    this.dirty.clear();
    await this.queue;
    this.installed.clear();
    await this.flush();
  }

  private async flush(): Promise<void> {
    // `flush` with a protocol selector deletes only routes carrying it
    await this.ops.ip(['-4', 'route', 'flush', 'table', 'main', 'proto', String(OVERLAYD_RT_PROTO)]);
  }

  private mark(k: string): void {
    if (this.closed) return;
    this.dirty.add(k);
    if (this.scheduled) return;
    this.scheduled = true;
    this.queue = this.queue.then(() => this.drain());
  }

  /** Applies every dirty key against one fresh snapshot of the main table. */
  private async drain(): Promise<void> {
    this.scheduled = false;
    if (this.closed || this.dirty.size === 0) return;
    const keys = [...this.dirty];
    this.dirty.clear();
    let table: KernelRoute[];
    let local: KernelRoute[];
    try {
      table = JSON.parse(await this.ops.ip(['-j', '-4', 'route', 'show', 'table', 'main'])) as KernelRoute[];
      local = JSON.parse(await this.ops.ip(['-j', '-4', 'route', 'show', 'table', 'local', 'type', 'local'])) as KernelRoute[];
    } catch (err) {
      this.o.logger.warn({ err: errorMessage(err) }, 'DirectRouting: cannot read the routing table; those peers stay on the UDP path for now');
      table = [];
      local = [];
    }
    for (const k of keys) {
      if (this.closed) return;
      await this.applyOne(k, table, local);
    }
  }

  private async applyOne(k: string, table: readonly KernelRoute[], local: readonly KernelRoute[]): Promise<void> {
    const want = this.wanted.get(k);
    const cur = this.installed.get(k);
    let direct = want !== undefined && isOnLink(want.publicIp, table, this.o.underlay);
    // the kernel accepts a local address as gateway: the subnet would be black-holed
    if (direct && want && isLocal(want.publicIp, local)) {
      this.o.logger.warn({ subnet: formatPrefix(want.subnet), publicIp: formatIp(want.publicIp) }, "DirectRouting: the peer's PublicIP is an address of this host; no direct route");
      direct = false;
    }
    const own = this.o.ownSubnet;
    if (direct && want && own && (prefixCovers(own, want.subnet) || prefixCovers(want.subnet, own))) {
      this.o.logger.warn({ subnet: formatPrefix(want.subnet), ownSubnet: formatPrefix(own) }, "DirectRouting: the peer's subnet overlaps this node's own; no direct route");
      direct = false;
    }
    const ul = this.o.underlay;
    try {
      if (direct && want) {
        if (cur?.via === want.publicIp) return;
        const dst = formatPrefix(want.subnet);
        const foreign = table.find((r) => !isOurs(r) && r.dst === dst);
        if (foreign) {
          if (cur) await this.del(k, cur.subnet);
          this.o.logger.warn({ subnet: dst, protocol: foreign.protocol ?? 'boot' }, 'DirectRouting: the subnet is already routed by someone else; left alone, the peer stays on the UDP path');
          return;
        }
        const via = formatIp(want.publicIp);
        await this.ops.ip(['-4', 'route', 'replace', dst, 'via', via, 'dev', ul, 'proto', String(OVERLAYD_RT_PROTO)]);
        this.installed.set(k, { subnet: want.subnet, via: want.publicIp });
        this.o.logger.info({ subnet: dst, via, dev: ul, was: cur ? formatIp(cur.via) : undefined }, 'direct route installed');
      } else if (cur) {
        await this.del(k, cur.subnet);
      }
    } catch (err) {
      this.o.logger.warn({ subnet: k, err: errorMessage(err) }, 'DirectRouting: route change failed; the peer uses the UDP path unless an older route of ours is in force');
    }
  }

  private async del(k: string, subnet: Prefix): Promise<void> {
    this.installed.delete(k);
    await this.ops.ip(['-4', 'route', 'del', formatPrefix(subnet), 'table', 'main', 'proto', String(OVERLAYD_RT_PROTO)]);
    this.o.logger.info({ subnet: formatPrefix(subnet) }, 'direct route removed');
  }
}
