/**
 * This node's subnet lease: acquisition as flannel does it, then keeping it (etcd lease
 * keepalive, re-attachment after the etcd lease is lost, re-creation after the key is
 * deleted, and a fatal error when another node took the subnet).
 */
import { EtcdLeaseInvalidError, type Etcd3 } from 'etcd3';
import { LeaseError } from '../errors';
import { formatIp, formatPrefix, prefixEquals, type Prefix } from '../net/addr';
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
  /** the etcd lease id the key is attached to */
  readonly leaseId: string;
  readonly how: AcquireHow;
  /** revision of the write that made the key ours */
  readonly revision: number;
  readonly expiresAt: Date;
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
    expiresAt: new Date(Date.now() + o.ttlSeconds * 1000),
  });
  const contention = new Backoff({ initialMs: 20, maxMs: 500, jitter: 0.5 }, o.random);
  let triedPrevious = false;

  try {
    for (let attempt = 1; attempt <= maxAttempts; attempt++) {
      if (o.stopper?.stopped) throw new LeaseError('stopped while acquiring the subnet lease');
      const leases = await listLeases(client, prefix);

      // 1. a lease already held by our PublicIP
      const mine = leases.filter((l) => l.publicIp === publicIp && l.subnet !== undefined);
      const reusable = mine.find((l) => l.subnet && isSubnetInRange(config, l.subnet) && l.entry.key === subnetKey(prefix, l.subnet));
      for (const l of mine) {
        if (l === reusable) continue;
        // ours, but no longer usable (other config, duplicate): flannel deletes it
        const del = await client
          .if(l.entry.key, 'Mod', '==', l.entry.modRevision)
          .then(client.delete().key(l.entry.key))
          .commit();
        if (del.succeeded) logger.info({ key: l.entry.key }, 'deleted a stale lease of this PublicIP that does not fit the config');
      }
      if (reusable?.subnet) {
        const id = await grant();
        const tx = await client
          .if(reusable.entry.key, 'Mod', '==', reusable.entry.modRevision)
          .then(client.put(reusable.entry.key).value(value).lease(id))
          .commit();
        if (tx.succeeded) {
          logger.info(
            { subnet: formatPrefix(reusable.subnet), publicIp: formatIp(publicIp), lease: id, previousLease: reusable.entry.lease },
            'subnet lease acquired: reusing the lease held by this PublicIP',
          );
          await dropKeylessLease(client, reusable.entry.lease, id, logger);
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
  /** the etcd lease the key is attached to now */
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
 * subnet, calls onFatal. Never deletes or revokes anything on close.
 */
export class LeaseKeeper {
  private readonly stopper = new Stopper();
  private leaseId: string;
  private leaseAlive = true;
  private timer: NodeJS.Timeout | undefined;
  private renewing = false;
  private renewFailures = 0;
  private readonly renewBackoff = new Backoff({ initialMs: 1000, maxMs: 30_000 });
  private reconciling = false;
  private reconcilePending: string | undefined;
  private fatal = false;
  /** false from "our key is gone/changed" until it is ours again */
  private keyHeld = true;
  private expires: Date;
  readonly key: string;
  private readonly value: string;

  constructor(private readonly o: LeaseKeeperOptions) {
    this.leaseId = o.leaseId;
    this.key = subnetKey(o.prefix, o.subnet);
    this.value = formatLeaseValue(o.publicIp);
    this.expires = new Date(Date.now() + o.ttlSeconds * 1000);
  }

  get renewIntervalMs(): number {
    return this.o.renewIntervalMs ?? Math.max(500, Math.floor((this.o.ttlSeconds * 1000) / 3));
  }

  /** The etcd lease id currently used. */
  get currentLeaseId(): string {
    return this.leaseId;
  }

  get expiresAt(): Date {
    return this.expires;
  }

  /** The lease is held: our key is in etcd with our value and the etcd lease has not expired. */
  get valid(): boolean {
    return !this.fatal && this.keyHeld && this.expires.getTime() > Date.now();
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
    this.timer = setTimeout(() => void this.renew(), ms);
  }

  /** One keepalive round trip on a short-lived stream. Returns the TTL etcd granted. */
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

  /** Renews now (also called by tests). */
  async renew(): Promise<void> {
    if (this.renewing || this.stopper.stopped || this.fatal) return;
    this.renewing = true;
    const id = this.leaseId;
    try {
      const ttl = await this.keepaliveOnce(id);
      if (ttl <= 0) {
        this.o.logger.warn({ lease: id, subnet: formatPrefix(this.o.subnet) }, 'etcd lease lost (expired or revoked); re-acquiring the subnet');
        if (this.leaseId === id) this.leaseAlive = false;
        this.trigger('etcd lease lost');
      } else {
        this.expires = new Date(Date.now() + ttl * 1000);
        const after = this.renewFailures;
        this.renewFailures = 0;
        this.renewBackoff.reset();
        this.o.logger.info({ lease: id, ttl, subnet: formatPrefix(this.o.subnet), ...(after ? { failedTries: after } : {}) }, 'lease renewed');
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
   * Anything but "ours, on our etcd lease" starts a reconcile.
   */
  observe(entry: KvEntry | undefined): void {
    if (this.fatal || this.stopper.stopped) return;
    if (entry) {
      const v = parseLeaseValue(entry.value);
      if (v.ok && v.value.publicIp === this.o.publicIp && entry.lease === this.leaseId) {
        this.keyHeld = true;
        return;
      }
      if (!v.ok || v.value.publicIp !== this.o.publicIp) this.keyHeld = false;
      this.trigger(v.ok && v.value.publicIp === this.o.publicIp ? 'key moved to another etcd lease' : 'key rewritten');
    } else {
      this.keyHeld = false;
      this.o.logger.warn({ key: this.key }, 'lease key disappeared from etcd (expired or deleted); re-acquiring the same subnet');
      this.trigger('key deleted');
    }
  }

  private trigger(reason: string): void {
    this.reconcilePending = reason;
    void this.reconcileLoop();
  }

  private async reconcileLoop(): Promise<void> {
    if (this.reconciling) return;
    this.reconciling = true;
    const backoff = new Backoff({ initialMs: 250, maxMs: 5000 });
    try {
      while (this.reconcilePending !== undefined && !this.stopper.stopped && !this.fatal) {
        const reason = this.reconcilePending;
        this.reconcilePending = undefined;
        try {
          await this.reconcileOnce(reason);
          backoff.reset();
        } catch (err) {
          if (this.stopper.stopped) return;
          this.o.logger.warn({ err: etcdErrorText(err), reason }, 'could not restore the lease yet; retrying');
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
        this.leaseAlive = false;
      }
    }
    throw new Error('lease key kept changing under us');
  }

  /** One look at the key and one write; true when done. */
  private async reconcileStep(reason: string): Promise<boolean> {
    const { client } = this.o;
    if (!this.leaseAlive) {
      const g = await client.leaseClient.leaseGrant({ TTL: this.o.ttlSeconds, ID: 0 });
      this.leaseId = String(g.ID);
      this.leaseAlive = true;
      this.expires = new Date(Date.now() + Number(g.TTL) * 1000);
      this.o.logger.info({ lease: this.leaseId, ttl: Number(g.TTL) }, 'granted a new etcd lease');
    }
    const got = await client.get(this.key).exec();
    const kv = got.kvs[0];
    if (!kv) {
      const tx = await client.if(this.key, 'Create', '==', 0).then(client.put(this.key).value(this.value).lease(this.leaseId)).commit();
      if (!tx.succeeded) return false; // someone created it meanwhile: look again
      this.keyHeld = true;
      this.o.logger.info({ subnet: formatPrefix(this.o.subnet), lease: this.leaseId, reason }, 'subnet lease re-acquired (same subnet)');
      this.schedule(this.renewIntervalMs);
      return true;
    }
    const e = toKvEntry(kv);
    const v = parseLeaseValue(e.value);
    if (!v.ok || v.value.publicIp !== this.o.publicIp) {
      this.fatal = true;
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
    if (e.lease === this.leaseId) return true; // all well
    const tx = await client.if(this.key, 'Mod', '==', e.modRevision).then(client.put(this.key).value(this.value).lease(this.leaseId)).commit();
    if (!tx.succeeded) return false;
    this.o.logger.info({ subnet: formatPrefix(this.o.subnet), lease: this.leaseId, was: e.lease, reason }, 'lease key re-attached to our etcd lease');
    return true;
  }

  /** For the source: whether `subnet` is this keeper's. */
  owns(subnet: Prefix): boolean {
    return prefixEquals(subnet, this.o.subnet);
  }

}
