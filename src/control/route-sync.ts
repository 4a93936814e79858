/**
 * Lease keys -> peer routes. Keeps its own copy of the leases (fed by RangeMirror) and its
 * own map of the routes it gave the sink, so that a resync after a broken watch applies
 * only the difference: an unchanged route is never removed and re-added.
 */
import type { Route, RouteSink } from '../dataplane/types';
import { formatIp, formatPrefix, prefixCovers, prefixEquals, prefixId, type Prefix } from '../net/addr';
import type { Logger } from '../ops/log';
import { parseLeaseValue, parseSubnetKey } from './etcd-schema';
import type { KvEntry, MirrorConsumer } from './watch';

export interface RouteDiff {
  readonly upserts: Route[];
  readonly removes: Prefix[];
}

/**
 * What to do to turn the routes in force into the desired ones: upsert every route that is
 * new or whose peer changed, remove every route no longer desired. Unchanged routes appear
 * in neither list.
 */
export function diffRoutes<K>(inForce: ReadonlyMap<K, Route>, desired: ReadonlyMap<K, Route>): RouteDiff {
  const upserts: Route[] = [];
  const removes: Prefix[] = [];
  for (const [k, r] of inForce) if (!desired.has(k)) removes.push(r.subnet);
  for (const [k, r] of desired) {
    const cur = inForce.get(k);
    if (!cur || cur.publicIp !== r.publicIp || !prefixEquals(cur.subnet, r.subnet)) upserts.push(r);
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
}

function hold(prefix: string, e: KvEntry): Held {
  const subnet = parseSubnetKey(prefix, e.key);
  const v = parseLeaseValue(e.value);
  return v.ok
    ? { subnet, modRevision: e.modRevision, publicIp: v.value.publicIp }
    : { subnet, modRevision: e.modRevision, publicIp: undefined, bad: { reason: v.reason, value: e.value.slice(0, 200) } };
}

export class RouteSync implements MirrorConsumer {
  private readonly leases = new Map<string, Held>();
  /** the routes given to the sink, by prefixId of their subnet */
  private readonly inForce = new Map<number, Route>();
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
    this.quiet = false;
    this.o.logger.info({ routes: this.inForce.size, added: d.upserts.length }, 'initial routes delivered');
  }

  /** Routes currently given to the sink. */
  routes(): Route[] {
    return [...this.inForce.values()];
  }

  snapshot(entries: ReadonlyMap<string, KvEntry>, revision: number, initial: boolean): void {
    this.leases.clear();
    for (const e of entries.values()) this.leases.set(e.key, hold(this.o.prefix, e));
    if (!this.sink) return;
    const d = this.applyAll();
    if (!initial) {
      this.o.logger.info(
        { revision, leases: entries.size, routes: this.inForce.size, upserted: d.upserts.length, removed: d.removes.length },
        'resync: routes reconciled with etcd',
      );
    }
  }

  put(entry: KvEntry): void {
    const h = hold(this.o.prefix, entry);
    const subnet = h.subnet;
    const old = this.leases.get(entry.key);
    this.leases.set(entry.key, h);
    if (old?.subnet && (!subnet || !prefixEquals(old.subnet, subnet))) this.applyOne(old.subnet);
    if (subnet) this.applyOne(subnet);
    else this.warnOnce(entry.key, entry.modRevision, 'key does not name an IPv4 subnet; ignored');
  }

  delete(key: string): void {
    const old = this.leases.get(key);
    this.leases.delete(key);
    if (old?.subnet) this.applyOne(old.subnet);
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
    return { subnet, publicIp: h.publicIp };
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
    } else if (!cur || cur.publicIp !== want.publicIp) {
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
