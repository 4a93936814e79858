/**
 * This node's subnet lease: acquisition as flannel does it, then keeping it (etcd lease
 * keepalive, re-attachment after the etcd lease is lost, re-creation after the key is
 * deleted, and a fatal error when another node took the subnet).
 */
import { EtcdLeaseInvalidError, type Etcd3 } from 'etcd3';
import { LeaseError } from '../errors';
import { formatIp, formatPrefix, type Prefix } from '../net/addr';
import type { Logger } from '../ops/log';
import { TakenSubnets, chooseFreeSubnet, exhaustedMessage, isSubnetInRange } from './allocator';
import { Backoff, Stopper, withTimeout } from './backoff';
import { etcdErrorText } from './etcd-client';
import { formatLeaseValue, parseLeaseValue, parseSubnetKey, subnetKey, subnetsPrefix } from './etcd-schema';
import type { NetworkConfig } from './source';
import { toKvEntry, type KvEntry } from './watch';

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
  /** the subnet named by the previous subnet file, if any */
  readonly previousSubnet?: Prefix;
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
  readonly publicIp: number | undefined;
}

async function listLeases(client: Etcd3, prefix: string): Promise<Listed[]> {
  const res = await client.getAll().prefix(subnetsPrefix(prefix)).exec();
  return res.kvs.map((kv) => {
    const entry = toKvEntry(kv);
    const v = parseLeaseValue(entry.value);
    return { entry, subnet: parseSubnetKey(prefix, entry.key), publicIp: v.ok ? v.value.publicIp : undefined };
  });
}

/**
 * Acquires this node's subnet lease like flannel:
 *  1. reuse the lease whose PublicIP is ours (and that fits the config), re-attached to a
 *     fresh etcd lease by a transaction on its mod revision; our other leases that no longer
 *     fit the config are deleted (flannel does the same);
 *  2. else the previous subnet file's subnet, if free and inside [SubnetMin, SubnetMax];
 *  3. else a random free subnet of [SubnetMin, SubnetMax].
 * 2 and 3 create the key with `if createRevision(key) == 0 then put`, so no existing key is
 * ever overwritten; a lost race is retried with another subnet (bounded).
 * Throws LeaseError when the Network is exhausted or every attempt lost a race.
 */
export async function acquireLease(o: AcquireOptions): Promise<AcquireResult> {
  const { client, prefix, config, publicIp, logger } = o;
  const value = formatLeaseValue(publicIp);
  const maxAttempts = o.maxAttempts ?? DEFAULT_ACQUIRE_ATTEMPTS;
  let leaseId: string | undefined;
  const grant = async (): Promise<string> => {
    if (leaseId === undefined) leaseId = String((await client.leaseClient.leaseGrant({ TTL: o.ttlSeconds, ID: 0 })).ID);
    return leaseId;
  };
  const result = (subnet: Prefix, how: AcquireHow, revision: number, id: string): AcquireResult => ({
    subnet,
    key: subnetKey(prefix, subnet),
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
      const fits = (l: Listed): boolean => l.subnet !== undefined && isSubnetInRange(config, l.subnet) && l.entry.key === subnetKey(prefix, l.subnet);
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
            { subnet: formatPrefix(reusable.subnet), publicIp: formatIp(publicIp), lease: id, previousLease: reusable.entry.lease },
            reservation
              ? 'subnet lease acquired: the reservation for this PublicIP (no TTL, nothing to renew)'
              : 'subnet lease acquired: reusing the lease held by this PublicIP',
          );
          if (!reservation) await dropKeylessLease(client, reusable.entry.lease, id, logger);
          return result(reusable.subnet, 'reused', Number(tx.header.revision), id);
        }
        logger.info({ key: reusable.entry.key }, 'our lease changed while reusing it; retrying');
        continue;
      }

      const taken = new TakenSubnets(
        config.subnetLen,
        leases.flatMap((l) => (l.subnet ? [l.subnet] : [])),
      );
      let candidate: Prefix | undefined;
      let how: AcquireHow = 'random';
      // 2. the previous subnet file's subnet, if free and inside the config's range
      const prev = o.previousSubnet;
      if (prev && !triedPrevious) {
        triedPrevious = true;
        if (!isSubnetInRange(config, prev)) {
          logger.warn({ subnet: formatPrefix(prev) }, 'previous subnet (from the subnet file) is outside the config range; not reused');
        } else if (taken.has(prev.addr)) {
          logger.info({ subnet: formatPrefix(prev) }, 'previous subnet (from the subnet file) is held by another lease; not reused');
        } else {
          candidate = prev;
          how = 'subnet-file';
        }
      }
      // 3. a random free one
      if (!candidate) candidate = chooseFreeSubnet(config, taken, o.random);
      if (!candidate) throw new LeaseError(exhaustedMessage(config));

      const key = subnetKey(prefix, candidate);
      const id = await grant();
      const tx = await client.if(key, 'Create', '==', 0).then(client.put(key).value(value).lease(id)).commit();
      if (tx.succeeded) {
        logger.info(
          { subnet: formatPrefix(candidate), publicIp: formatIp(publicIp), lease: id, how, attempt },
          how === 'subnet-file' ? 'subnet lease acquired: the previous subnet from the subnet file' : 'subnet lease acquired: a new subnet',
        );
        return result(candidate, how, Number(tx.header.revision), id);
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

export interface LeaseKeeperOptions {
  readonly client: Etcd3;
  readonly prefix: string;
  readonly subnet: Prefix;
  readonly publicIp: number;
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
}

/**
 * Keeps the lease: renews the etcd lease every TTL/3; when etcd says the etcd lease is gone
 * (expired during an outage, revoked) grants a new one and re-attaches the key; when the
 * key disappears re-creates it if the subnet is still free; if another node holds the
 * subnet, calls onFatal. A reservation (our key without an etcd lease, flannel's way of
 * pinning a subnet) is left as it is: nothing to renew. Never deletes or revokes anything
 * on close.
 */
export class LeaseKeeper {
  private readonly stopper = new Stopper();
  /** the etcd lease keeping our key; "0" while the key is a reservation or none is granted */
  private leaseId: string;
  private timer: NodeJS.Timeout | undefined;
  private renewing = false;
  private renewFailures = 0;
  private readonly renewBackoff = new Backoff({ initialMs: 1000, maxMs: 30_000 });
  private reconciling = false;
  private reconcilePending: string | undefined;
  private fatal = false;
  /** false from "our key is gone/changed" until it is ours again */
  private keyHeld = true;
  /** our key is a reservation (no etcd lease, no expiry) */
  private reservation: boolean;
  private expires: Date | undefined;
  readonly key: string;
  private readonly value: string;

  constructor(private readonly o: LeaseKeeperOptions) {
    this.leaseId = o.leaseId;
    this.reservation = o.leaseId === '0';
    this.key = subnetKey(o.prefix, o.subnet);
    this.value = formatLeaseValue(o.publicIp);
    if (!this.reservation) this.expires = new Date(Date.now() + o.ttlSeconds * 1000);
  }

  get renewIntervalMs(): number {
    return this.o.renewIntervalMs ?? Math.max(500, Math.floor((this.o.ttlSeconds * 1000) / 3));
  }

  /** The etcd lease id keeping our key ("0": a reservation). */
  get currentLeaseId(): string {
    return this.reservation ? '0' : this.leaseId;
  }

  /** When the lease expires unless renewed; undefined for a reservation. */
  get expiresAt(): Date | undefined {
    return this.reservation ? undefined : this.expires;
  }

  /** The lease is held: our key is in etcd with our value and has not expired. */
  get valid(): boolean {
    if (this.fatal || !this.keyHeld) return false;
    return this.reservation || (this.expires !== undefined && this.expires.getTime() > Date.now());
  }

  /** The last renewal failed (etcd unreachable). */
  get renewalFailing(): boolean {
    return this.renewFailures > 0;
  }

  start(): void {
    this.schedule(this.renewIntervalMs);
  }

  close(): void {
    this.stopper.stop();
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  private schedule(ms: number): void {
    if (this.stopper.stopped || this.fatal) return;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    if (this.reservation) return; // nothing to renew
    this.timer = setTimeout(() => void this.renew(), ms);
  }

  /** One keepalive round trip on a short-lived stream. Returns the TTL etcd granted (0: lease gone). */
  private async keepaliveOnce(id: string): Promise<number> {
    const timeoutMs = this.o.callTimeoutMs ?? 5000;
    const stream = await this.o.client.leaseClient.leaseKeepAlive({ deadline: Date.now() + timeoutMs });
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
  }

  /** Renews the etcd lease now (the timer calls this; tests may too). */
  async renew(): Promise<void> {
    if (this.renewing || this.stopper.stopped || this.fatal || this.reservation) return;
    this.renewing = true;
    const id = this.leaseId;
    try {
      const ttl = id === '0' ? 0 : await this.keepaliveOnce(id);
      if (ttl <= 0) {
        this.o.logger.warn({ lease: id, subnet: formatPrefix(this.o.subnet) }, 'etcd lease lost (expired or revoked); re-acquiring the subnet');
        if (this.leaseId === id) this.leaseId = '0';
        this.trigger('etcd lease lost');
      } else {
        this.expires = new Date(Date.now() + ttl * 1000);
        const failedTries = this.renewFailures;
        this.renewFailures = 0;
        this.renewBackoff.reset();
        this.o.logger.info({ lease: id, ttl, subnet: formatPrefix(this.o.subnet), ...(failedTries ? { failedTries } : {}) }, 'lease renewed');
      }
      this.schedule(this.renewIntervalMs);
    } catch (err) {
      this.renewFailures++;
      const wait = Math.min(this.renewBackoff.next(), this.renewIntervalMs);
      if (this.renewFailures === 1) {
        this.o.logger.warn({ err: etcdErrorText(err), lease: id, retryMs: wait }, 'lease renewal failed (etcd unreachable?); retrying');
      }
      this.schedule(wait);
    } finally {
      this.renewing = false;
    }
  }

  /**
   * The current state of this node's key as seen by the watch (undefined: deleted).
   * Anything but "ours, on our etcd lease (or a reservation)" starts a reconcile.
   */
  observe(entry: KvEntry | undefined): void {
    if (this.fatal || this.stopper.stopped) return;
    if (entry) {
      const v = parseLeaseValue(entry.value);
      const ours = v.ok && v.value.publicIp === this.o.publicIp;
      if (ours && (entry.lease === this.currentLeaseId || entry.lease === '0')) {
        this.keyHeld = true;
        if (entry.lease === '0' && !this.reservation) this.becomeReservation();
        return;
      }
      if (!ours) this.keyHeld = false;
      this.trigger(ours ? 'key moved to another etcd lease' : 'key rewritten');
    } else {
      this.keyHeld = false;
      this.o.logger.warn({ key: this.key }, 'lease key disappeared from etcd (expired or deleted); re-acquiring the same subnet');
      this.trigger('key deleted');
    }
  }

  /** An operator turned our key into a reservation (flannel's pinning): stop renewing. */
  private becomeReservation(): void {
    this.reservation = true;
    this.o.logger.info({ key: this.key, lease: this.leaseId }, 'our lease key is now a reservation (no TTL); renewals stop');
    this.leaseId = '0';
    this.schedule(0);
  }

  private trigger(reason: string): void {
    this.reconcilePending = reason;
    void this.reconcileLoop();
  }

  private async reconcileLoop(): Promise<void> {
    if (this.reconciling) return;
    this.reconciling = true;
    const backoff = new Backoff({ initialMs: 250, maxMs: 5000 });
    let warned = false;
    try {
      while (this.reconcilePending !== undefined && !this.stopper.stopped && !this.fatal) {
        const reason = this.reconcilePending;
        this.reconcilePending = undefined;
        try {
          await this.reconcileOnce(reason);
          backoff.reset();
        } catch (err) {
          if (this.stopper.stopped) return;
          if (!warned) this.o.logger.warn({ err: etcdErrorText(err), reason }, 'could not restore the lease yet; retrying');
          warned = true;
          this.reconcilePending ??= reason;
          await this.stopper.sleep(backoff.next());
        }
      }
    } finally {
      this.reconciling = false;
    }
  }

  /** Bring etcd back to "our key, our value, on our live etcd lease", or fail fatally. */
  private async reconcileOnce(reason: string): Promise<void> {
    for (let round = 0; round < 5 && !this.stopper.stopped && !this.fatal; round++) {
      try {
        if (await this.reconcileStep(reason)) return;
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
    const g = await this.o.client.leaseClient.leaseGrant({ TTL: this.o.ttlSeconds, ID: 0 });
    this.leaseId = String(g.ID);
    this.expires = new Date(Date.now() + Number(g.TTL) * 1000);
    this.o.logger.info({ lease: this.leaseId, ttl: Number(g.TTL) }, 'granted a new etcd lease');
    return this.leaseId;
  }

  /** One look at the key and at most one write; true when done. */
  private async reconcileStep(reason: string): Promise<boolean> {
    const { client } = this.o;
    const got = await client.get(this.key).exec();
    const kv = got.kvs[0];
    if (!kv) {
      // gone (expired, deleted, or a reservation removed): create it again if still free
      const id = await this.liveLease();
      const tx = await client.if(this.key, 'Create', '==', 0).then(client.put(this.key).value(this.value).lease(id)).commit();
      if (!tx.succeeded) return false; // someone created it meanwhile: look again
      this.keyHeld = true;
      this.reservation = false;
      this.o.logger.info({ subnet: formatPrefix(this.o.subnet), lease: id, reason }, 'subnet lease re-acquired (same subnet)');
      this.schedule(this.renewIntervalMs);
      return true;
    }
    const e = toKvEntry(kv);
    const v = parseLeaseValue(e.value);
    if (!v.ok || v.value.publicIp !== this.o.publicIp) {
      this.fatal = true;
      this.keyHeld = false;
      const holder = v.ok ? `node ${formatIp(v.value.publicIp)}` : `a lease with an unreadable value (${v.reason})`;
      const err = new LeaseError(
        `subnet ${formatPrefix(this.o.subnet)} of this node (PublicIP ${formatIp(this.o.publicIp)}) is now held by ${holder} ` +
          `(etcd key ${this.key}); stopping so that a restart acquires another subnet`,
      );
      this.o.logger.error({ key: this.key, value: e.value }, 'subnet lease lost to another node');
      this.close();
      this.o.onFatal(err);
      return true;
    }
    this.keyHeld = true;
    if (e.lease === '0') {
      if (!this.reservation) this.becomeReservation();
      return true;
    }
    if (!this.reservation && e.lease === this.leaseId) return true; // all well
    // ours, but on some other etcd lease: move it to ours
    const id = await this.liveLease();
    const tx = await client.if(this.key, 'Mod', '==', e.modRevision).then(client.put(this.key).value(this.value).lease(id)).commit();
    if (!tx.succeeded) return false;
    this.reservation = false;
    this.o.logger.info({ subnet: formatPrefix(this.o.subnet), lease: id, was: e.lease, reason }, 'lease key re-attached to our etcd lease');
    this.schedule(this.renewIntervalMs);
    return true;
  }
}
