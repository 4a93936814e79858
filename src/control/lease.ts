/**
 * This node's subnet lease: acquisition as flannel does it, then keeping it (etcd lease
 * keepalive, re-attachment after the etcd lease is lost, re-creation after the key is
 * deleted, and a fatal error when another node took the subnet).
 */
import { EtcdLeaseInvalidError, type Etcd3 } from 'etcd3';
import { LeaseError } from '../errors';
import { formatIp, formatPrefix, type Prefix } from '../net/addr';
import type { Logger } from '../ops/log';
import { formatPrefix6, type Prefix6 } from '../net/addr6';
import { TakenSubnets, TakenSubnets6, chooseFreeSubnet, chooseFreeSubnet6, exhaustedMessage, exhaustedMessage6, isSubnet6InRange, isSubnetInRange } from './allocator';
import { Backoff, Stopper, withTimeout } from './backoff';
import { etcdErrorText } from './etcd-client';
import { formatLeaseValue, parseLeaseValue, type LeaseBackendData, parseSubnetKey, parseSubnetKey6, subnetKey, subnetsPrefix } from './etcd-schema';
import type { NetworkConfig } from './source';
import { listPrefix, toKvEntry, type KvEntry } from './watch';

export const DEFAULT_LEASE_TTL_SECONDS = 24 * 60 * 60;
export const DEFAULT_ACQUIRE_ATTEMPTS = 20;

/** How the subnet was chosen. */
export type AcquireHow = 'reused' | 'subnet-file' | 'random';

export interface AcquireOptions {
  readonly client: Etcd3;
  readonly prefix: string;
  readonly config: NetworkConfig;
  /** this node's underlay address, uint32 */
  readonly publicIp: number;
  /** this node's underlay IPv6 (PublicIPv6 of the value); used only when the config has EnableIPv6 */
  readonly publicIpv6?: bigint;
  /** what the value advertises in BackendData (--partial-checksums); none by default, as flannel's udp backend */
  readonly backend?: LeaseBackendData;
  /** the subnet named by the previous subnet file, if any */
  readonly previousSubnet?: Prefix;
  /** the IPv6 subnet named by the previous subnet file (FLANNEL_IPV6_SUBNET), if any */
  readonly previousSubnet6?: Prefix6;
  readonly ttlSeconds: number;
  readonly logger: Logger;
  /** bound on create attempts lost to other nodes (default 20) */
  readonly maxAttempts?: number;
  /** [0,1) random source for the subnet pick */
  readonly random?: () => number;
  /** stops waiting between attempts */
  readonly stopper?: Stopper;
}

export interface AcquireResult {
  readonly subnet: Prefix;
  /** the IPv6 subnet of a dual-stack lease (the config has EnableIPv6) */
  readonly subnet6?: Prefix6;
  readonly key: string;
  /** the etcd lease id the key is attached to; "0" for a reservation (no TTL) */
  readonly leaseId: string;
  readonly how: AcquireHow;
  /** revision of the write that made the key ours */
  readonly revision: number;
  /** undefined for a reservation */
  readonly expiresAt?: Date;
}

interface Listed {
  readonly entry: KvEntry;
  readonly subnet: Prefix | undefined;
  readonly subnet6: Prefix6 | undefined;
  readonly publicIp: number | undefined;
}

async function listLeases(client: Etcd3, prefix: string): Promise<Listed[]> {
  const out: Listed[] = [];
  await listPrefix(client, subnetsPrefix(prefix), (entry) => {
    const v = parseLeaseValue(entry.value);
    out.push({ entry, subnet: parseSubnetKey(prefix, entry.key), subnet6: parseSubnetKey6(prefix, entry.key), publicIp: v.ok ? v.value.publicIp : undefined });
  });
  return out;
}

/**
 * Acquires this node's subnet lease like flannel:
 *  1. reuse the lease whose PublicIP is ours (and that fits the config), re-attached to a
 *     fresh etcd lease by a transaction on its mod revision; our other leases that no longer
 *     fit the config are deleted (flannel does the same);
 *  2. else the previous subnet file's subnet, if free and inside [SubnetMin, SubnetMax];
 *  3. else a random free subnet of [SubnetMin, SubnetMax].
 * Dual-stack (config.ipv6), as flannel's tryAcquireLease: a lease fits only with an IPv6
 * part inside [IPv6SubnetMin, IPv6SubnetMax] (an IPv4-only lease of ours is deleted and both
 * subnets are picked anew; in an IPv4-only network a lease with an IPv6 part does not fit);
 * 2 needs both subnets of the file, free and in range; 3 picks a free IPv4 and a free IPv6
 * subnet together, and the key is `10.244.3.0-24&fd00:10:244:3::-64`.
 * 2 and 3 create the key with `if createRevision(key) == 0 then put`, so no existing key is
 * ever overwritten; a lost race is retried with another subnet (bounded).
 * Throws LeaseError when the Network is exhausted or every attempt lost a race.
 */
export async function acquireLease(o: AcquireOptions): Promise<AcquireResult> {
  const { client, prefix, config, publicIp, logger } = o;
  const v6 = config.ipv6;
  const value = formatLeaseValue(publicIp, v6 ? o.publicIpv6 : undefined, o.backend);
  const maxAttempts = o.maxAttempts ?? DEFAULT_ACQUIRE_ATTEMPTS;
  let leaseId: string | undefined;
  const grant = async (): Promise<string> => {
    if (leaseId === undefined) leaseId = String((await client.leaseClient.leaseGrant({ TTL: o.ttlSeconds, ID: 0 })).ID);
    return leaseId;
  };
  const result = (subnet: Prefix, subnet6: Prefix6 | undefined, how: AcquireHow, revision: number, id: string): AcquireResult => ({
    subnet,
    ...(subnet6 ? { subnet6 } : {}),
    key: subnetKey(prefix, subnet, subnet6),
    leaseId: id,
    how,
    revision,
    ...(id === '0' ? {} : { expiresAt: new Date(Date.now() + o.ttlSeconds * 1000) }),
  });
  const contention = new Backoff({ initialMs: 20, maxMs: 500, jitter: 0.5 }, o.random);
  let triedPrevious = false;

  try {
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      if (o.stopper?.stopped) throw new LeaseError('stopped while acquiring the subnet lease');
      const leases = await listLeases(client, prefix);

      // 1. a lease already held by our PublicIP (a reservation, i.e. a key without an etcd
      //    lease, first: flannel's way of pinning a subnet to a node)
      const mine = leases.filter((l) => l.publicIp === publicIp && l.subnet !== undefined);
      const fits = (l: Listed): boolean =>
        l.subnet !== undefined && isSubnetInRange(config, l.subnet) &&
        (v6 ? l.subnet6 !== undefined && isSubnet6InRange(v6, l.subnet6) : l.subnet6 === undefined) &&
        l.entry.key === subnetKey(prefix, l.subnet, v6 ? l.subnet6 : undefined);
      const reusable = mine.find((l) => fits(l) && l.entry.lease === '0') ?? mine.find(fits);
      for (const l of mine) {
        if (l === reusable) continue;
        if (fits(l)) {
          logger.warn({ key: l.entry.key }, 'another lease also names this PublicIP; left alone (not routed)');
          continue;
        }
        // ours, but it does not fit the config (any more): flannel deletes it
        const del = await client
          .if(l.entry.key, 'Mod', '==', l.entry.modRevision)
          .then(client.delete().key(l.entry.key))
          .commit();
        if (del.succeeded) logger.info({ key: l.entry.key }, 'deleted a lease of this PublicIP that does not fit the network config');
      }
      if (reusable?.subnet) {
        const reservation = reusable.entry.lease === '0';
        const id = reservation ? '0' : await grant();
        const put = client.put(reusable.entry.key).value(value);
        if (!reservation) put.lease(id);
        const tx = await client.if(reusable.entry.key, 'Mod', '==', reusable.entry.modRevision).then(put).commit();
        if (tx.succeeded) {
          logger.info(
            { subnet: formatPrefix(reusable.subnet), ...sub6(reusable.subnet6), publicIp: formatIp(publicIp), lease: id, previousLease: reusable.entry.lease },
            reservation
              ? 'subnet lease acquired: the reservation for this PublicIP (no TTL, nothing to renew)'
              : 'subnet lease acquired: reusing the lease held by this PublicIP',
          );
          if (!reservation) await dropKeylessLease(client, reusable.entry.lease, id, logger);
          return result(reusable.subnet, v6 ? reusable.subnet6 : undefined, 'reused', Number(tx.header.revision), id);
        }
        logger.info({ key: reusable.entry.key }, 'our lease changed while reusing it; retrying');
        continue;
      }

      const taken = new TakenSubnets(
        config.subnetLen,
        leases.flatMap((l) => (l.subnet ? [l.subnet] : [])),
      );
      const taken6 = v6 ? new TakenSubnets6(v6.subnetLen, leases.flatMap((l) => (l.subnet6 ? [l.subnet6] : []))) : undefined;
      let candidate: Prefix | undefined;
      let candidate6: Prefix6 | undefined;
      let how: AcquireHow = 'random';
      // 2. the previous subnet file's subnet(s), if free and inside the config's range
      const prev = o.previousSubnet;
      const prev6 = o.previousSubnet6;
      if (prev && !triedPrevious) {
        triedPrevious = true;
        if (!isSubnetInRange(config, prev)) {
          logger.warn({ subnet: formatPrefix(prev) }, 'previous subnet (from the subnet file) is outside the config range; not reused');
        } else if (taken.has(prev.addr)) {
          logger.info({ subnet: formatPrefix(prev) }, 'previous subnet (from the subnet file) is held by another lease; not reused');
        } else if (v6 && taken6 && (!prev6 || !isSubnet6InRange(v6, prev6) || taken6.has(prev6.addr))) {
          logger.info(
            { subnet: formatPrefix(prev), subnet6: prev6 ? formatPrefix6(prev6) : null },
            'previous subnets (from the subnet file) are not reusable in this dual-stack network (no FLANNEL_IPV6_SUBNET, outside IPv6SubnetMin..IPv6SubnetMax, or held by another lease); not reused',
          );
        } else {
          candidate = prev;
          candidate6 = v6 ? prev6 : undefined;
          how = 'subnet-file';
        }
      }
      // 3. a random free one (dual-stack: one of each family)
      if (!candidate) {
        candidate = chooseFreeSubnet(config, taken, o.random);
        if (!candidate) throw new LeaseError(exhaustedMessage(config));
        if (v6 && taken6) {
          candidate6 = chooseFreeSubnet6(v6, taken6, o.random);
          if (!candidate6) throw new LeaseError(exhaustedMessage6(v6));
        }
      }

      const key = subnetKey(prefix, candidate, candidate6);
      const id = await grant();
      const tx = await client.if(key, 'Create', '==', 0).then(client.put(key).value(value).lease(id)).commit();
      if (tx.succeeded) {
        logger.info(
          { subnet: formatPrefix(candidate), ...sub6(candidate6), publicIp: formatIp(publicIp), lease: id, how, attempt },
          how === 'subnet-file' ? 'subnet lease acquired: the previous subnet from the subnet file' : 'subnet lease acquired: a new subnet',
        );
        return result(candidate, candidate6, how, Number(tx.header.revision), id);
      }
      logger.info({ subnet: formatPrefix(candidate), attempt }, 'lost the race for a subnet to another node; retrying with another');
      if (o.stopper) await o.stopper.sleep(contention.next());
      else await new Promise((r) => setTimeout(r, contention.next()));
    }
    throw new LeaseError(`could not acquire a subnet lease: ${maxAttempts} attempts all lost a race with other nodes`);
  } catch (err) {
    // never leave a granted, unused etcd lease behind
    if (leaseId !== undefined) await client.leaseClient.leaseRevoke({ ID: leaseId }).catch(() => undefined);
    throw err;
  }
}

/** The log field of an IPv6 subnet, when there is one. */
function sub6(p: Prefix6 | undefined): { subnet6?: string } {
  return p ? { subnet6: formatPrefix6(p) } : {};
}

/** Revokes `oldId` if it holds no key any more (the key moved to `newId`); best effort. */
async function dropKeylessLease(client: Etcd3, oldId: string, newId: string, logger: Logger): Promise<void> {
  if (!oldId || oldId === '0' || oldId === newId) return;
  try {
    const ttl = await client.leaseClient.leaseTimeToLive({ ID: oldId, keys: true });
    if (Number(ttl.TTL) > 0 && ttl.keys.length === 0) {
      await client.leaseClient.leaseRevoke({ ID: oldId });
      logger.debug({ lease: oldId }, 'revoked the previous etcd lease (it holds no key now)');
    }
  } catch {
    // gone already, or etcd busy: it expires on its own
  }
}

/** etcd answered "requested lease not found": the etcd lease expired or was revoked. */
export function isLeaseNotFound(err: unknown): boolean {
  return err instanceof EtcdLeaseInvalidError || (err instanceof Error && /lease not found/i.test(err.message));
}

/**
 * The etcd operations the lease keeper needs, one round trip each; `etcdLeaseOps` is the real
 * one, unit tests give a fake. Errors are thrown as the etcd client throws them
 * (`isLeaseNotFound` for an etcd lease that is gone).
 */
export interface LeaseOps {
  /** One keepalive of etcd lease `id`; the TTL etcd granted, s (0: the lease is gone). */
  keepalive(id: string, timeoutMs: number): Promise<number>;
  get(key: string): Promise<KvEntry | undefined>;
  /** Grants an etcd lease of `ttlSeconds`; its id and granted TTL (s). */
  grant(ttlSeconds: number): Promise<{ id: string; ttl: number }>;
  /** put key=value on etcd lease `leaseId` if the key does not exist; false if it does */
  createIfAbsent(key: string, value: string, leaseId: string): Promise<boolean>;
  /** put key=value on etcd lease `leaseId` if the key's mod revision is `modRevision` */
  putIfModRevision(key: string, value: string, leaseId: string, modRevision: number): Promise<boolean>;
}

/** LeaseOps on an etcd3 client. */
export function etcdLeaseOps(client: Etcd3): LeaseOps {
  return {
    async keepalive(id: string, timeoutMs: number): Promise<number> {
      const stream = await client.leaseClient.leaseKeepAlive({ deadline: Date.now() + timeoutMs });
      try {
        const res = await withTimeout(
          new Promise<{ TTL: string }>((resolve, reject) => {
            stream.on('data', resolve);
            stream.on('error', reject);
            stream.on('end', () => reject(new Error('lease keepalive stream ended without an answer')));
            stream.write({ ID: id });
          }),
          timeoutMs + 500,
          () => new Error('lease keepalive timed out'),
        );
        return Number(res.TTL);
      } finally {
        stream.cancel();
      }
    },
    async get(key: string): Promise<KvEntry | undefined> {
      const kv = (await client.get(key).exec()).kvs[0];
      return kv ? toKvEntry(kv) : undefined;
    },
    async grant(ttlSeconds: number): Promise<{ id: string; ttl: number }> {
      const g = await client.leaseClient.leaseGrant({ TTL: ttlSeconds, ID: 0 });
      return { id: String(g.ID), ttl: Number(g.TTL) };
    },
    async createIfAbsent(key: string, value: string, leaseId: string): Promise<boolean> {
      return (await client.if(key, 'Create', '==', 0).then(client.put(key).value(value).lease(leaseId)).commit()).succeeded;
    },
    async putIfModRevision(key: string, value: string, leaseId: string, modRevision: number): Promise<boolean> {
      return (await client.if(key, 'Mod', '==', modRevision).then(client.put(key).value(value).lease(leaseId)).commit()).succeeded;
    },
  };
}

/** Time for the keeper: the real clock, or a fake one in unit tests. */
export interface KeeperClock {
  /** ms since epoch */
  now(): number;
  /** runs fn once after ms; returns the cancel function */
  setTimer(fn: () => void, ms: number): () => void;
}

export const realClock: KeeperClock = {
  now: () => Date.now(),
  setTimer: (fn, ms) => {
    const t = setTimeout(fn, ms);
    return () => clearTimeout(t);
  },
};

/**
 * The lease keeper's states.
 *  held          our key, our value, on our live etcd lease; the renewal timer is armed
 *  renewing      a keepalive round trip is in flight
 *  renew-failing the last keepalive failed (etcd unreachable); a retry timer is armed; the
 *                lease stays valid until it expires
 *  reserved      our key is a reservation (no etcd lease, no expiry): nothing to renew
 *  lost          the key was deleted/changed or the etcd lease is gone: a restore is due
 *                (at once, or after a backoff when the last one failed)
 *  reacquiring   a restore (look at the key, at most one write) is in flight
 *  conflict      final: another node holds the subnet, or another node with our PublicIP
 *                keeps taking it; onFatal was called
 *  stopped       final: close()
 */
export type LeaseState = 'held' | 'renewing' | 'renew-failing' | 'reserved' | 'lost' | 'reacquiring' | 'conflict' | 'stopped';

/** Every transition the keeper may make; anything else is a bug (thrown). */
export const LEASE_TRANSITIONS: Readonly<Record<LeaseState, readonly LeaseState[]>> = {
  held: ['renewing', 'lost', 'reserved', 'conflict', 'stopped'],
  renewing: ['held', 'renew-failing', 'lost', 'reserved', 'conflict', 'stopped'],
  'renew-failing': ['renewing', 'lost', 'reserved', 'conflict', 'stopped'],
  reserved: ['lost', 'conflict', 'stopped'],
  lost: ['reacquiring', 'conflict', 'stopped'],
  reacquiring: ['held', 'reserved', 'lost', 'conflict', 'stopped'],
  conflict: [],
  stopped: [],
};

/** What the keeper reacts to: its timers, etcd's answers, and the watch of its key. */
export type LeaseEvent =
  | { readonly type: 'renew-due' }
  | { readonly type: 'renewed'; readonly id: string; readonly ttl: number }
  | { readonly type: 'renew-failed'; readonly id: string; readonly err: unknown }
  | { readonly type: 'etcd-lease-gone'; readonly id: string }
  | { readonly type: 'observed'; readonly entry: KvEntry | undefined }
  | { readonly type: 'restore-due' }
  | { readonly type: 'restored' }
  | { readonly type: 'restore-failed'; readonly err: unknown }
  | { readonly type: 'conflict'; readonly err: LeaseError }
  | { readonly type: 'stop' };

/** Another writer moving our key to its etcd lease this many times within the window: two nodes share our PublicIP. */
export const DUPLICATE_TAKEBACKS = 3;
export const DUPLICATE_WINDOW_MS = 60_000;

export interface LeaseKeeperOptions {
  readonly client: Etcd3;
  readonly prefix: string;
  readonly subnet: Prefix;
  /** the IPv6 subnet of a dual-stack lease (part of the key) */
  readonly subnet6?: Prefix6;
  readonly publicIp: number;
  /** PublicIPv6 written in the value (dual-stack, when this node has one) */
  readonly publicIpv6?: bigint;
  /** BackendData written in the value (as acquireLease wrote it) */
  readonly backend?: LeaseBackendData;
  readonly ttlSeconds: number;
  /** the etcd lease the key is attached to now; "0" for a reservation (key without TTL) */
  readonly leaseId: string;
  readonly logger: Logger;
  /** called once when the subnet is lost for good (held by another node) */
  readonly onFatal: (err: LeaseError) => void;
  /** renewal interval, ms (default: a third of the TTL, as etcd's Go client does) */
  readonly renewIntervalMs?: number;
  /** deadline of one keepalive round trip, ms */
  readonly callTimeoutMs?: number;
  /** test seams: etcd operations (default: on `client`) and time (default: the real clock) */
  readonly ops?: LeaseOps;
  readonly clock?: KeeperClock;
  /** [0,1) random source of the backoff jitter */
  readonly random?: () => number;
}

/**
 * Keeps the lease, as a state machine (LeaseState; every change goes through dispatch()):
 * renews the etcd lease every TTL/3; when etcd says the etcd lease is gone (expired during
 * an outage, revoked) grants a new one and re-attaches the key; when the key disappears
 * re-creates it if the subnet is still free; if another node holds the subnet, or another
 * node with our PublicIP keeps moving our key to its own etcd lease (a copied VM image),
 * calls onFatal and writes nothing more. A reservation (our key without an etcd lease,
 * flannel's way of pinning a subnet) is left as it is: nothing to renew. Never deletes or
 * revokes anything on close. All on the JS main thread.
 */
export class LeaseKeeper {
  private st: LeaseState;
  /** the etcd lease keeping our key; "0" while the key is a reservation or none is granted */
  private leaseId: string;
  private expires: number | undefined;
  /** false from "our key is gone/rewritten" until it is ours again */
  private keyHeld = true;
  private renewFailures = 0;
  private readonly renewBackoff: Backoff;
  private readonly restoreBackoff: Backoff;
  /** why the current restore runs; set again when more happens while it runs */
  private restoreReason: string | undefined;
  private restorePending = false;
  private restoreWarned = false;
  /** times another writer moved our key to its own etcd lease (ms since epoch) */
  private takebacks: number[] = [];
  /** mod revision of the last such write counted (a write seen twice counts once) */
  private lastTakebackRev = 0;
  private cancelTimer: (() => void) | undefined;
  private readonly inflight = new Set<Promise<void>>();
  private readonly ops: LeaseOps;
  private readonly clock: KeeperClock;
  /** the states passed through, for tests and debugging (bounded) */
  readonly history: LeaseState[] = [];
  readonly key: string;
  private readonly value: string;

  constructor(private readonly o: LeaseKeeperOptions) {
    this.ops = o.ops ?? etcdLeaseOps(o.client);
    this.clock = o.clock ?? realClock;
    this.renewBackoff = new Backoff({ initialMs: 1000, maxMs: 30_000 }, o.random);
    this.restoreBackoff = new Backoff({ initialMs: 250, maxMs: 5000 }, o.random);
    this.leaseId = o.leaseId;
    this.key = subnetKey(o.prefix, o.subnet, o.subnet6);
    this.value = formatLeaseValue(o.publicIp, o.publicIpv6, o.backend);
    this.st = o.leaseId === '0' ? 'reserved' : 'held';
    this.history.push(this.st);
    if (this.st === 'held') this.expires = this.clock.now() + o.ttlSeconds * 1000;
  }

  get state(): LeaseState {
    return this.st;
  }

  get renewIntervalMs(): number {
    return this.o.renewIntervalMs ?? Math.max(500, Math.floor((this.o.ttlSeconds * 1000) / 3));
  }

  /** The etcd lease id keeping our key ("0": a reservation). */
  get currentLeaseId(): string {
    return this.st === 'reserved' ? '0' : this.leaseId;
  }

  /** When the lease expires unless renewed; undefined for a reservation. */
  get expiresAt(): Date | undefined {
    return this.st === 'reserved' || this.expires === undefined ? undefined : new Date(this.expires);
  }

  /** The lease is held: our key is in etcd with our value and has not expired. */
  get valid(): boolean {
    if (this.st === 'conflict' || this.st === 'stopped' || !this.keyHeld) return false;
    return this.st === 'reserved' || (this.expires !== undefined && this.expires > this.clock.now());
  }

  /** The last renewal failed (etcd unreachable). */
  get renewalFailing(): boolean {
    return this.renewFailures > 0;
  }

  start(): void {
    if (this.st === 'held') this.arm(this.renewIntervalMs, { type: 'renew-due' });
  }

  close(): void {
    this.dispatch({ type: 'stop' });
  }

  /** Renews the etcd lease now (the timer does this; tests may too); resolves when done. */
  async renew(): Promise<void> {
    this.dispatch({ type: 'renew-due' });
    await this.settled();
  }

  /**
   * The current state of this node's key as seen by the watch (undefined: deleted).
   * Anything but "ours, on our etcd lease (or a reservation)" starts a restore.
   */
  observe(entry: KvEntry | undefined): void {
    this.dispatch({ type: 'observed', entry });
  }

  /** Resolves once no etcd call of the keeper is in flight (tests). */
  async settled(): Promise<void> {
    for (let i = 0; i < 100 && this.inflight.size > 0; i++) await Promise.all([...this.inflight]);
  }

  // ---- the state machine ----

  private to(next: LeaseState): void {
    if (next === this.st) return;
    if (!LEASE_TRANSITIONS[this.st].includes(next)) throw new Error(`lease keeper: no transition ${this.st} -> ${next}`);
    this.st = next;
    this.history.push(next);
    if (this.history.length > 200) this.history.splice(0, 100);
  }

  private arm(ms: number, ev: LeaseEvent): void {
    this.cancelTimer?.();
    this.cancelTimer = this.clock.setTimer(() => {
      this.cancelTimer = undefined;
      this.dispatch(ev);
    }, ms);
  }

  private disarm(): void {
    this.cancelTimer?.();
    this.cancelTimer = undefined;
  }

  private run(p: Promise<LeaseEvent>): void {
    const done = p.then(
      (ev) => this.dispatch(ev),
      (err: unknown) => this.dispatch({ type: 'restore-failed', err }),
    );
    const tracked: Promise<void> = done.finally(() => this.inflight.delete(tracked));
    this.inflight.add(tracked);
  }

  /** The one transition function: every event, every state change, every effect starts here. */
  dispatch(ev: LeaseEvent): void {
    const s = this.st;
    if (s === 'conflict' || s === 'stopped') return;
    const log = this.o.logger;
    const subnet = formatPrefix(this.o.subnet);
    switch (ev.type) {
      case 'stop':
        this.disarm();
        this.to('stopped');
        return;

      case 'renew-due': {
        if (s !== 'held' && s !== 'renew-failing') return; // a restore or a renewal is under way, or nothing to renew
        this.to('renewing');
        const id = this.leaseId;
        const timeoutMs = this.o.callTimeoutMs ?? 5000;
        this.run(
          (id === '0' ? Promise.resolve(0) : this.ops.keepalive(id, timeoutMs)).then(
            (ttl): LeaseEvent => (ttl > 0 ? { type: 'renewed', id, ttl } : { type: 'etcd-lease-gone', id }),
            (err: unknown): LeaseEvent => (isLeaseNotFound(err) ? { type: 'etcd-lease-gone', id } : { type: 'renew-failed', id, err }),
          ),
        );
        return;
      }

      case 'renewed': {
        if (ev.id !== this.leaseId) return; // an answer about a lease we no longer use
        this.expires = this.clock.now() + ev.ttl * 1000;
        const failedTries = this.renewFailures;
        this.renewFailures = 0;
        this.renewBackoff.reset();
        log.info({ lease: ev.id, ttl: ev.ttl, subnet, ...(failedTries ? { failedTries } : {}) }, 'lease renewed');
        if (s === 'renewing') {
          this.to('held');
          this.arm(this.renewIntervalMs, { type: 'renew-due' });
        }
        return;
      }

      case 'renew-failed': {
        if (ev.id !== this.leaseId || s !== 'renewing') return;
        this.renewFailures++;
        const wait = Math.min(this.renewBackoff.next(), this.renewIntervalMs);
        if (this.renewFailures === 1) {
          log.warn({ err: etcdErrorText(ev.err), lease: ev.id, retryMs: wait }, 'lease renewal failed (etcd unreachable?); retrying');
        }
        this.to('renew-failing');
        this.arm(wait, { type: 'renew-due' });
        return;
      }

      case 'etcd-lease-gone': {
        if (ev.id !== this.leaseId) return;
        log.warn({ lease: ev.id, subnet }, 'etcd lease lost (expired or revoked); re-acquiring the subnet');
        this.leaseId = '0';
        this.renewFailures = 0;
        this.lose('etcd lease lost');
        return;
      }

      case 'observed': {
        const e = ev.entry;
        if (!e) {
          this.keyHeld = false;
          log.warn({ key: this.key }, 'lease key disappeared from etcd (expired or deleted); re-acquiring the same subnet');
          this.lose('key deleted');
          return;
        }
        const v = parseLeaseValue(e.value);
        const ours = v.ok && v.value.publicIp === this.o.publicIp;
        if (ours && (e.lease === this.currentLeaseId || e.lease === '0')) {
          this.keyHeld = true;
          if (e.lease === '0' && s !== 'reserved' && s !== 'lost' && s !== 'reacquiring') this.becomeReservation();
          return;
        }
        if (!ours) {
          this.keyHeld = false;
          this.lose('key rewritten');
          return;
        }
        // ours, on an etcd lease that is not ours: someone with our PublicIP wrote it
        const now = this.clock.now();
        if (e.modRevision > this.lastTakebackRev) {
          this.lastTakebackRev = e.modRevision;
          this.takebacks = [...this.takebacks.filter((at) => now - at < DUPLICATE_WINDOW_MS), now];
        }
        if (this.takebacks.length >= DUPLICATE_TAKEBACKS) {
          const ip = formatIp(this.o.publicIp);
          this.conflict(
            new LeaseError(
              `subnet ${subnet} of this node (PublicIP ${ip}, etcd key ${this.key}) keeps being moved to etcd lease ${e.lease} ` +
                `by another writer with the same PublicIP (${this.takebacks.length} times within ${DUPLICATE_WINDOW_MS / 1000} s): ` +
                `two nodes claim PublicIP ${ip} (a copied VM image, or a wrong --public-ip?); stopping instead of fighting over it`,
            ),
            { key: this.key, otherLease: e.lease, modRevision: e.modRevision },
            'another node with this PublicIP holds our lease key',
          );
          return;
        }
        this.lose('key moved to another etcd lease');
        return;
      }

      case 'restore-due': {
        if (s !== 'lost') return;
        this.to('reacquiring');
        const reason = this.restoreReason ?? 'lease changed';
        this.restorePending = false;
        this.run(this.restore(reason).then((): LeaseEvent => ({ type: 'restored' })));
        return;
      }

      case 'restored': {
        if (s !== 'reacquiring') return;
        this.restoreBackoff.reset();
        this.restoreWarned = false;
        if (this.restorePending) {
          this.to('lost');
          this.dispatch({ type: 'restore-due' });
        } else if (this.leaseId === '0') {
          this.to('reserved');
          this.disarm();
        } else {
          this.to('held');
          this.arm(this.renewIntervalMs, { type: 'renew-due' });
        }
        return;
      }

      case 'restore-failed': {
        if (s !== 'reacquiring') return;
        if (!this.restoreWarned) log.warn({ err: etcdErrorText(ev.err), reason: this.restoreReason }, 'could not restore the lease yet; retrying');
        this.restoreWarned = true;
        this.to('lost');
        this.arm(this.restoreBackoff.next(), { type: 'restore-due' });
        return;
      }

      case 'conflict':
        this.conflict(ev.err, { key: this.key }, 'subnet lease lost to another node');
        return;
    }
  }

  /** Something is wrong with our key or etcd lease: restore it now (or after the one in flight). */
  private lose(reason: string): void {
    this.restoreReason = reason;
    const s = this.st;
    if (s === 'reacquiring') {
      // the restore in flight finishes first; then one more runs
      this.restorePending = true;
      return;
    }
    // (from renewing: the keepalive in flight is answered later; its answer is about a lease
    // id the restore may replace, and only updates the expiry while that id is ours)
    if (s === 'lost') {
      if (this.cancelTimer) return; // a backed-off retry is armed
    } else {
      this.to('lost');
    }
    this.disarm();
    this.dispatch({ type: 'restore-due' });
  }

  private conflict(err: LeaseError, fields: Record<string, unknown>, msg: string): void {
    this.keyHeld = false;
    this.disarm();
    this.to('conflict');
    this.o.logger.error(fields, msg);
    this.o.onFatal(err);
  }

  /** An operator turned our key into a reservation (flannel's pinning): stop renewing. */
  private becomeReservation(): void {
    this.o.logger.info({ key: this.key, lease: this.leaseId }, 'our lease key is now a reservation (no TTL); renewals stop');
    this.leaseId = '0';
    this.disarm();
    this.to('reserved');
  }

  /** Bring etcd back to "our key, our value, on our live etcd lease" (throws to retry later). */
  private async restore(reason: string): Promise<void> {
    for (let round = 0; round < 5; round++) {
      if (this.st !== 'reacquiring') return;
      try {
        if (await this.restoreStep(reason)) return;
      } catch (err) {
        if (!isLeaseNotFound(err)) throw err;
        // our etcd lease expired or was revoked: grant a new one on the next round
        this.o.logger.warn({ lease: this.leaseId }, 'etcd lease lost (expired or revoked); granting a new one');
        this.leaseId = '0';
      }
    }
    throw new Error('lease key kept changing under us');
  }

  /** A live etcd lease for our key (granted when we have none). */
  private async liveLease(): Promise<string> {
    if (this.leaseId !== '0') return this.leaseId;
    const g = await this.ops.grant(this.o.ttlSeconds);
    this.leaseId = g.id;
    this.expires = this.clock.now() + g.ttl * 1000;
    this.o.logger.info({ lease: g.id, ttl: g.ttl }, 'granted a new etcd lease');
    return g.id;
  }

  /** One look at the key and at most one write; true when done. */
  private async restoreStep(reason: string): Promise<boolean> {
    const e = await this.ops.get(this.key);
    if (this.st !== 'reacquiring') return true;
    const subnet = formatPrefix(this.o.subnet);
    if (!e) {
      // gone (expired, deleted, or a reservation removed): create it again if still free
      const id = await this.liveLease();
      if (!(await this.ops.createIfAbsent(this.key, this.value, id))) return false; // someone created it meanwhile: look again
      this.keyHeld = true;
      this.o.logger.info({ subnet, lease: id, reason }, 'subnet lease re-acquired (same subnet)');
      return true;
    }
    const v = parseLeaseValue(e.value);
    if (!v.ok || v.value.publicIp !== this.o.publicIp) {
      const holder = v.ok ? `node ${formatIp(v.value.publicIp)}` : `a lease with an unreadable value (${v.reason})`;
      this.dispatch({
        type: 'conflict',
        err: new LeaseError(
          `subnet ${subnet} of this node (PublicIP ${formatIp(this.o.publicIp)}) is now held by ${holder} ` +
            `(etcd key ${this.key}); stopping so that a restart acquires another subnet`,
        ),
      });
      return true;
    }
    this.keyHeld = true;
    if (e.lease === '0') {
      if (this.leaseId !== '0') this.o.logger.info({ key: this.key, lease: this.leaseId }, 'our lease key is now a reservation (no TTL); renewals stop');
      this.leaseId = '0';
      return true;
    }
    if (e.lease === this.leaseId) return true; // all well
    // ours, but on some other etcd lease: move it to ours
    const id = await this.liveLease();
    if (!(await this.ops.putIfModRevision(this.key, this.value, id, e.modRevision))) return false;
    this.o.logger.info({ subnet, lease: id, was: e.lease, reason }, 'lease key re-attached to our etcd lease');
    return true;
  }
}
