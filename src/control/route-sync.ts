/**
 * Lease keys -> peer routes. Keeps its own copy of the leases (fed by RangeMirror) and its
 * own map of the routes it gave the sink, so that a resync after a broken watch applies
 * only the difference: an unchanged route is never removed and re-added.
 *
 * Dual-stack (`ipv6` set): a lease whose key has an IPv6 part (and whose IPv4 part is routed)
 * also yields a Route6 via sink.upsert6/remove6. Route6.publicIpv6 is set (inner IPv6 rides
 * the IPv6 underlay) only when --ipv6-underlay is auto, this node has a PublicIPv6 and the
 * lease has one; else inner IPv6 rides the IPv4 underlay to PublicIP. IPv4-only leases (an
 * older flannel, an IPv4-only node) get their IPv4 route only.
 */
import { samePeer, type Route, type Route6, type RouteSink } from '../dataplane/types';
import { formatIp, formatPrefix, prefixCovers, prefixEquals, prefixId, type Prefix } from '../net/addr';
import { formatIp6, formatPrefix6, prefix6Covers, prefix6Equals, type Prefix6 } from '../net/addr6';
import type { Logger } from '../ops/log';
import { parseLeaseValue, parseSubnetKey, parseSubnetKey6 } from './etcd-schema';
import type { KvEntry, MirrorConsumer } from './watch';

export interface RouteDiff {
  readonly upserts: Route[];
  readonly removes: Prefix[];
}

/** Same subnet, same peer, same advertised capability. */
export function sameRoute(a: Route, b: Route): boolean {
  return samePeer(a, b) && prefixEquals(a.subnet, b.subnet);
}

/**
 * What to do to turn the routes in force into the desired ones: upsert every route that is
 * new or whose peer (or what the peer advertises) changed, remove every route no longer desired. Unchanged routes appear
 * in neither list.
 */
export function diffRoutes<K>(inForce: ReadonlyMap<K, Route>, desired: ReadonlyMap<K, Route>): RouteDiff {
  const upserts: Route[] = [];
  const removes: Prefix[] = [];
  for (const [k, r] of inForce) if (!desired.has(k)) removes.push(r.subnet);
  for (const [k, r] of desired) {
    const cur = inForce.get(k);
    if (!cur || !sameRoute(cur, r)) upserts.push(r);
  }
  return { upserts, removes };
}

export interface RouteSyncOptions {
  /** the etcd prefix (e.g. /coreos.com/network) */
  readonly prefix: string;
  /** the cluster Network: leases outside it are not routed */
  readonly network: Prefix;
  /** this node's subnet (never routed) and underlay address */
  readonly ownSubnet: Prefix;
  readonly ownPublicIp: number;
  readonly logger: Logger;
  /** dual-stack: the IPv6 half (undefined: IPv4-only, IPv6 parts of keys and values are not read) */
  readonly ipv6?: RouteSync6Options;
}

export interface RouteSync6Options {
  /** IPv6Network: IPv6 subnets outside it are not routed */
  readonly network: Prefix6;
  /** this node's IPv6 subnet (never routed) */
  readonly ownSubnet: Prefix6;
  /** inner IPv6 rides the IPv6 underlay to peers with a PublicIPv6 (--ipv6-underlay auto and this node has a PublicIPv6) */
  readonly ipv6Underlay: boolean;
}

/** A numeric Map key of an IPv6 prefix (bigints compare by value). */
function prefix6Id(p: Prefix6): bigint {
  return (p.addr << 8n) | BigInt(p.len);
}

/**
 * One lease as kept here: parsed once, without its value text (10,000 leases: what this
 * map holds is most of the control plane's memory).
 */
interface Held {
  /** the IPv4 subnet the key names; undefined for keys that name none */
  readonly subnet: Prefix | undefined;
  readonly modRevision: number;
  /** the holder's PublicIP (uint32); undefined when the value is unreadable */
  readonly publicIp: number | undefined;
  /** why the value is unreadable, and its first 200 characters (for the warning) */
  readonly bad?: { readonly reason: string; readonly value: string };
  /** dual-stack only: the key's IPv6 part, and the value's PublicIPv6 */
  readonly subnet6?: Prefix6;
  readonly publicIpv6?: bigint;
  /** the value's BackendData advertises partial checksums */
  readonly partialChecksums?: true;
}

function hold(prefix: string, e: KvEntry, dual: boolean): Held {
  const subnet = parseSubnetKey(prefix, e.key);
  const v = parseLeaseValue(e.value);
  if (!v.ok) return { subnet, modRevision: e.modRevision, publicIp: undefined, bad: { reason: v.reason, value: e.value.slice(0, 200) } };
  const pc = v.value.partialChecksums ? { partialChecksums: true as const } : {};
  if (!dual) return { subnet, modRevision: e.modRevision, publicIp: v.value.publicIp, ...pc };
  const subnet6 = parseSubnetKey6(prefix, e.key);
  const publicIpv6 = v.value.publicIpv6;
  return {
    subnet, modRevision: e.modRevision, publicIp: v.value.publicIp,
    ...(subnet6 ? { subnet6 } : {}), ...(publicIpv6 !== undefined ? { publicIpv6 } : {}), ...pc,
  };
}

export class RouteSync implements MirrorConsumer {
  private readonly leases = new Map<string, Held>();
  /** the routes given to the sink, by prefixId of their subnet */
  private readonly inForce = new Map<number, Route>();
  /** the IPv6 routes given to the sink, by prefix6Id of their subnet */
  private readonly inForce6 = new Map<bigint, Route6>();
  /** "key@modRevision" already warned about, so each bad value is logged once */
  private readonly warned = new Set<string>();
  private sink: RouteSink | undefined;
  /** true while the initial set is delivered: per-route lines go to debug */
  private quiet = false;

  constructor(private readonly o: RouteSyncOptions) {}

  /** Starts delivering to `sink`: every desired route now, changes later. */
  attach(sink: RouteSink): void {
    this.sink = sink;
    // one summary line instead of one line per route (10,000 nodes: 10,000 lines at start)
    this.quiet = true;
    const d = this.applyAll();
    this.applyAll6();
    this.quiet = false;
    this.o.logger.info({ routes: this.inForce.size, added: d.upserts.length, ...(this.o.ipv6 ? { routes6: this.inForce6.size } : {}) }, 'initial routes delivered');
  }

  /** Routes currently given to the sink. */
  routes(): Route[] {
    return [...this.inForce.values()];
  }

  /** IPv6 routes currently given to the sink. */
  routes6(): Route6[] {
    return [...this.inForce6.values()];
  }

  snapshot(entries: ReadonlyMap<string, KvEntry>, revision: number, initial: boolean): void {
    this.leases.clear();
    for (const e of entries.values()) this.leases.set(e.key, hold(this.o.prefix, e, this.o.ipv6 !== undefined));
    if (!this.sink) return;
    const d = this.applyAll();
    this.applyAll6();
    if (!initial) {
      this.o.logger.info(
        { revision, leases: entries.size, routes: this.inForce.size, upserted: d.upserts.length, removed: d.removes.length },
        'resync: routes reconciled with etcd',
      );
    }
  }

  put(entry: KvEntry): void {
    const h = hold(this.o.prefix, entry, this.o.ipv6 !== undefined);
    const subnet = h.subnet;
    const old = this.leases.get(entry.key);
    this.leases.set(entry.key, h);
    if (old?.subnet && (!subnet || !prefixEquals(old.subnet, subnet))) this.applyOne(old.subnet);
    if (subnet) this.applyOne(subnet);
    else this.warnOnce(entry.key, entry.modRevision, 'key does not name an IPv4 subnet; ignored');
    if (old?.subnet6 && (!h.subnet6 || !prefix6Equals(old.subnet6, h.subnet6))) this.applyOne6(old.subnet6);
    if (h.subnet6) this.applyOne6(h.subnet6);
  }

  delete(key: string): void {
    const old = this.leases.get(key);
    this.leases.delete(key);
    if (old?.subnet) this.applyOne(old.subnet);
    if (old?.subnet6) this.applyOne6(old.subnet6);
  }

  private warnOnce(key: string, modRevision: number, why: string, extra: Record<string, unknown> = {}): void {
    const id = `${key}@${modRevision}`;
    if (this.warned.has(id)) return;
    if (this.warned.size > 10_000) this.warned.clear();
    this.warned.add(id);
    this.o.logger.warn({ key, modRevision, ...extra }, `lease skipped: ${why}`);
  }

  /** The route the lease at `key` asks for, or undefined (own lease, bad value, outside the Network). */
  private routeOf(key: string, h: Held): Route | undefined {
    const subnet = h.subnet;
    if (!subnet) return undefined;
    if (prefixEquals(subnet, this.o.ownSubnet)) return undefined;
    if (h.publicIp === undefined) {
      this.warnOnce(key, h.modRevision, `malformed value (${h.bad?.reason ?? 'unreadable'})`, { value: h.bad?.value ?? '' });
      return undefined;
    }
    if (!prefixCovers(this.o.network, subnet)) {
      this.warnOnce(key, h.modRevision, `subnet ${formatPrefix(subnet)} is outside the Network ${formatPrefix(this.o.network)}`);
      return undefined;
    }
    if (h.publicIp === this.o.ownPublicIp) {
      this.warnOnce(key, h.modRevision, `another subnet held by this node's own PublicIP ${formatIp(h.publicIp)}`);
      return undefined;
    }
    return h.partialChecksums ? { subnet, publicIp: h.publicIp, partialChecksums: true } : { subnet, publicIp: h.publicIp };
  }

  /** The IPv6 route the lease at `key` asks for: only when its IPv4 route is asked for too (one node, one lease). */
  private route6Of(key: string, h: Held): Route6 | undefined {
    const v6 = this.o.ipv6;
    const subnet6 = h.subnet6;
    if (!v6 || !subnet6 || h.publicIp === undefined) return undefined;
    if (prefix6Equals(subnet6, v6.ownSubnet)) return undefined;
    if (!this.routeOf(key, h)) return undefined;
    if (!prefix6Covers(v6.network, subnet6)) {
      this.warnOnce(key, h.modRevision, `IPv6 subnet ${formatPrefix6(subnet6)} is outside the IPv6Network ${formatPrefix6(v6.network)}`);
      return undefined;
    }
    return v6.ipv6Underlay && h.publicIpv6 !== undefined
      ? { subnet: subnet6, publicIp: h.publicIp, publicIpv6: h.publicIpv6 }
      : { subnet: subnet6, publicIp: h.publicIp };
  }

  /** Desired IPv6 route for one IPv6 subnet (the newest of the keys naming it wins). */
  private desiredFor6(subnet6: Prefix6): Route6 | undefined {
    let best: { route: Route6; rev: number } | undefined;
    for (const [key, h] of this.leases) {
      if (!h.subnet6 || !prefix6Equals(h.subnet6, subnet6)) continue;
      const r = this.route6Of(key, h);
      if (r && (!best || h.modRevision > best.rev)) best = { route: r, rev: h.modRevision };
    }
    return best?.route;
  }

  private applyAll6(): void {
    if (!this.o.ipv6 || !this.sink) return;
    const best = new Map<bigint, { route: Route6; rev: number }>();
    for (const [key, h] of this.leases) {
      if (!h.subnet6) continue;
      const r = this.route6Of(key, h);
      if (!r) continue;
      const k = prefix6Id(r.subnet);
      const cur = best.get(k);
      if (!cur || h.modRevision > cur.rev) best.set(k, { route: r, rev: h.modRevision });
    }
    for (const [k, r] of this.inForce6) if (!best.has(k)) this.remove6(r.subnet);
    for (const [k, { route }] of best) {
      const cur = this.inForce6.get(k);
      if (!cur || !sameRoute6(cur, route)) this.upsert6(route);
    }
  }

  private applyOne6(subnet6: Prefix6): void {
    if (!this.o.ipv6 || !this.sink) return;
    const want = this.desiredFor6(subnet6);
    const cur = this.inForce6.get(prefix6Id(subnet6));
    if (!want) {
      if (cur) this.remove6(subnet6);
    } else if (!cur || !sameRoute6(cur, want)) {
      this.upsert6(want);
    }
  }

  private upsert6(r: Route6): void {
    const k = prefix6Id(r.subnet);
    const cur = this.inForce6.get(k);
    this.sink?.upsert6?.(r);
    this.inForce6.set(k, r);
    const level = this.quiet ? 'debug' : 'info';
    if (!this.o.logger.isLevelEnabled(level)) return;
    const fields = { subnet6: formatPrefix6(r.subnet), publicIp: formatIp(r.publicIp), underlay: r.publicIpv6 === undefined ? 'ipv4' : formatIp6(r.publicIpv6) };
    this.o.logger[level](fields, cur ? 'IPv6 route changed' : 'IPv6 route added');
  }

  private remove6(subnet6: Prefix6): void {
    const k = prefix6Id(subnet6);
    const cur = this.inForce6.get(k);
    if (!cur) return;
    this.sink?.remove6?.(subnet6);
    this.inForce6.delete(k);
    this.o.logger.info({ subnet6: formatPrefix6(subnet6), publicIp: formatIp(cur.publicIp) }, 'IPv6 route removed');
  }

  /** Desired route for one subnet (the newest of the keys naming it wins). */
  private desiredFor(subnet: Prefix): Route | undefined {
    let best: { route: Route; rev: number } | undefined;
    for (const [key, h] of this.leases) {
      if (!h.subnet || !prefixEquals(h.subnet, subnet)) continue;
      const r = this.routeOf(key, h);
      if (r && (!best || h.modRevision > best.rev)) best = { route: r, rev: h.modRevision };
    }
    return best?.route;
  }

  private desiredAll(): Map<number, Route> {
    const best = new Map<number, Route>();
    const rev = new Map<number, number>();
    for (const [key, h] of this.leases) {
      const r = this.routeOf(key, h);
      if (!r) continue;
      const k = prefixId(r.subnet);
      const cur = rev.get(k);
      if (cur === undefined || h.modRevision > cur) {
        best.set(k, r);
        rev.set(k, h.modRevision);
      }
    }
    return best;
  }

  private applyAll(): RouteDiff {
    const d = diffRoutes(this.inForce, this.desiredAll());
    for (const s of d.removes) this.remove(s);
    for (const r of d.upserts) this.upsert(r);
    return d;
  }

  private applyOne(subnet: Prefix): void {
    if (!this.sink) return;
    const k = prefixId(subnet);
    const want = this.desiredFor(subnet);
    const cur = this.inForce.get(k);
    if (!want) {
      if (cur) this.remove(subnet);
    } else if (!cur || !sameRoute(cur, want)) {
      this.upsert(want);
    }
  }

  private upsert(r: Route): void {
    const k = prefixId(r.subnet);
    const cur = this.inForce.get(k);
    this.sink?.upsert(r);
    this.inForce.set(k, r);
    const level = this.quiet ? 'debug' : 'info';
    // 10,000 leases at start: no line objects built for a level that is off
    if (!this.o.logger.isLevelEnabled(level)) return;
    if (cur) this.o.logger[level]({ subnet: formatPrefix(r.subnet), publicIp: formatIp(r.publicIp), was: formatIp(cur.publicIp) }, 'route changed');
    else this.o.logger[level]({ subnet: formatPrefix(r.subnet), publicIp: formatIp(r.publicIp) }, 'route added');
  }

  private remove(subnet: Prefix): void {
    const k = prefixId(subnet);
    const cur = this.inForce.get(k);
    if (!cur) return;
    this.sink?.remove(subnet);
    this.inForce.delete(k);
    this.o.logger.info({ subnet: formatPrefix(subnet), publicIp: formatIp(cur.publicIp) }, 'route removed');
  }
}

function sameRoute6(a: Route6, b: Route6): boolean {
  return a.publicIp === b.publicIp && a.publicIpv6 === b.publicIpv6 && prefix6Equals(a.subnet, b.subnet);
}
