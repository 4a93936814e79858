/**
 * A mirror of one etcd key range (the leases under `<prefix>/subnets/`): list, then watch
 * from the listed revision + 1; when the watch breaks (compaction, etcd restart, lost
 * connection) list again and hand the consumer the new full snapshot, then watch again
 * from that list's revision. Retries with bounded exponential backoff, forever, until
 * closed. The consumer diffs the snapshot against its own state, so nothing flaps.
 *
 * Watches require a leader (etcd-client.ts: `hasleader`), so a member cut off from its
 * cluster ends the watch with "no leader" instead of going silent; and every
 * `resyncIntervalMs` the range is re-listed anyway (a new watch from the new list), which
 * catches whatever a watch may have missed.
 */
import { Range, type Etcd3, type IKeyValue, type IWatchResponse, type Watcher } from 'etcd3';
import { errorMessage } from '../errors';
import type { Logger } from '../ops/log';
import { Backoff, Stopper, type BackoffOptions } from './backoff';
import { etcdErrorText, isNoLeaderError } from './etcd-client';

/** One key as listed or watched. Revisions are etcd int64s, exact as numbers below 2^53. */
export interface KvEntry {
  readonly key: string;
  readonly value: string;
  readonly modRevision: number;
  readonly createRevision: number;
  /** the etcd lease id the key is attached to, "0" for none */
  readonly lease: string;
}

export function toKvEntry(kv: IKeyValue): KvEntry {
  return {
    key: kv.key.toString('utf8'),
    value: kv.value.toString('utf8'),
    modRevision: Number(kv.mod_revision),
    createRevision: Number(kv.create_revision),
    lease: String(kv.lease || '0'),
  };
}

/** Keys per page of a list: bounds the memory one etcd answer takes (10,000 leases: 10 pages). */
export const LIST_PAGE_SIZE = 1000;

/**
 * Lists every key under `prefix` in pages of `pageSize`, all at the revision of the first
 * page (one consistent snapshot), handing each entry to `onEntry` as its page arrives.
 * Resolves that revision. Only one page's etcd answer is in memory at a time.
 */
export async function listPrefix(client: Etcd3, prefix: string, onEntry: (e: KvEntry) => void, pageSize = LIST_PAGE_SIZE): Promise<number> {
  const end = Range.prefix(prefix).end;
  let start = Buffer.from(prefix);
  let revision: string | undefined;
  // bounded: every page but the last moves `start` past at least one key
  for (let page = 0; page < 10_000_000; page++) {
    const q = client.getAll().inRange(new Range(start, end)).limit(pageSize);
    const res = await (revision === undefined ? q : q.revision(revision)).exec();
    revision ??= String(res.header.revision);
    for (const kv of res.kvs) onEntry(toKvEntry(kv));
    const last = res.kvs[res.kvs.length - 1];
    if (!res.more || !last) return Number(revision);
    start = Buffer.concat([last.key, Buffer.from([0])]);
  }
  throw new Error(`listing ${prefix}: too many pages`);
}

export interface MirrorConsumer {
  /**
   * The full state of the range at `revision` after a (re)list. `initial` is true for the
   * first list. The consumer replaces its view with it.
   */
  snapshot(entries: ReadonlyMap<string, KvEntry>, revision: number, initial: boolean): void;
  /** A key was created or modified. */
  put(entry: KvEntry): void;
  /** A key was deleted (or expired with its lease). */
  delete(key: string, revision: number): void;
}

export interface RangeMirrorOptions {
  readonly client: Etcd3;
  /** the key prefix to mirror, e.g. "/coreos.com/network/subnets/" */
  readonly prefix: string;
  readonly consumer: MirrorConsumer;
  readonly logger: Logger;
  /** backoff between failed re-lists (default 250 ms .. 5 s) */
  readonly backoff?: BackoffOptions;
  /**
   * Test seam: awaited between a list and the creation of its watch, e.g. to change and
   * compact etcd past the list's revision. Never set in production.
   */
  readonly beforeWatch?: (listRevision: number) => Promise<void>;
  /** periodic full re-list, ms after the watch was last (re)established; 0/undefined: never */
  readonly resyncIntervalMs?: number;
}

export const DEFAULT_RESYNC_BACKOFF: BackoffOptions = { initialMs: 250, maxMs: 5000 };

export class RangeMirror {
  private readonly stopper = new Stopper();
  private readonly backoff: Backoff;
  private watcher: Watcher | undefined;
  private resyncing = false;
  private resyncPending = false;
  private listedOnce = false;
  /** the last revision we know the consumer has seen everything up to */
  private revision = 0;
  private brokenSince: number | undefined;
  /** etcd confirmed the current watch */
  private connected = false;
  private resyncCount = 0;
  /** when the last re-list after the first one succeeded (ms since epoch) */
  private lastResync: number | undefined;
  /** since when the member we talk to said it has no leader (ms since epoch) */
  private noLeaderSince: number | undefined;
  private periodicTimer: NodeJS.Timeout | undefined;
  /** the re-list in progress is a periodic one (the watch was fine) */
  private periodicRun = false;

  constructor(private readonly o: RangeMirrorOptions) {
    this.backoff = new Backoff(o.backoff ?? DEFAULT_RESYNC_BACKOFF);
  }

  /** Revision up to which the consumer is current. */
  get currentRevision(): number {
    return this.revision;
  }

  /** How many times the range was re-listed after a break (not counting the first list). */
  get resyncs(): number {
    return this.resyncCount;
  }

  /** True while the watch is established (false while broken / re-listing after a break). */
  get healthy(): boolean {
    return this.connected;
  }

  /** False from "etcdserver: no leader" (the member is cut off) until a watch is confirmed again. */
  get leader(): boolean {
    return this.noLeaderSince === undefined;
  }

  /** When the last re-list after the first one completed; undefined before any. */
  get lastResyncAt(): Date | undefined {
    return this.lastResync === undefined ? undefined : new Date(this.lastResync);
  }

  /**
   * Lists once (throws the list's error: the caller decides whether that is fatal), hands the
   * snapshot to the consumer, and starts watching.
   */
  async start(): Promise<void> {
    await this.listAndWatch(true);
  }

  private async listAndWatch(initial: boolean): Promise<void> {
    const entries = new Map<string, KvEntry>();
    const revision = await listPrefix(this.o.client, this.o.prefix, (e) => entries.set(e.key, e));
    if (this.stopper.stopped) return;
    this.revision = revision;
    this.listedOnce = true;
    if (!initial) this.lastResync = Date.now();
    try {
      this.o.consumer.snapshot(entries, revision, initial);
    } catch (err) {
      // a failing sink must not stop the watch; what was applied is tracked by the consumer
      this.o.logger.error({ err: errorMessage(err), revision }, 'lease snapshot handler failed');
    }
    if (this.o.beforeWatch) await this.o.beforeWatch(revision);
    if (this.stopper.stopped) return;
    this.watchFrom(revision + 1);
  }

  private watchFrom(startRevision: number): void {
    const w = this.o.client.watch().prefix(this.o.prefix).startRevision(String(startRevision)).watcher();
    this.watcher = w;
    w.on('connected', () => {
      if (this.watcher === w) this.onConnected();
    });
    w.on('data', (res: IWatchResponse) => {
      if (this.watcher !== w) return;
      this.onData(res);
    });
    // 'disconnected': the stream broke (etcd down, member gone); etcd3 would resume on its
    // own, but from a revision it tracks loosely: we re-list instead and keep control.
    w.on('disconnected', (err: Error) => this.broken(w, `connection lost: ${etcdErrorText(err)}`, true, err));
    // 'error': etcd cancelled the watch, e.g. its start revision was compacted.
    w.on('error', (err: Error) => this.broken(w, `watch cancelled by etcd: ${etcdErrorText(err) || 'compacted'}`, false, err));
  }

  /** etcd confirmed the watch: only now is a break over (a list alone proves little). */
  private onConnected(): void {
    this.connected = true;
    this.backoff.reset();
    this.schedulePeriodic();
    if (this.noLeaderSince !== undefined) {
      this.o.logger.info({ prefix: this.o.prefix, noLeaderMs: Date.now() - this.noLeaderSince }, 'etcd: a member with a leader answers again');
      this.noLeaderSince = undefined;
    }
    if (this.brokenSince !== undefined) {
      const downMs = Date.now() - this.brokenSince;
      this.brokenSince = undefined;
      this.o.logger.info({ prefix: this.o.prefix, revision: this.revision, downMs }, 'etcd watch resumed after re-list (resync)');
    }
  }

  private onData(res: IWatchResponse): void {
    if (res.compact_revision && res.compact_revision !== '0') {
      // etcd3 turns this into an 'error' (canceled); nothing to apply here
      return;
    }
    for (const ev of res.events) {
      const e = toKvEntry(ev.kv);
      try {
        if (ev.type === 'Put') this.o.consumer.put(e);
        else this.o.consumer.delete(e.key, e.modRevision);
      } catch (err) {
        this.o.logger.error({ err: errorMessage(err), key: e.key }, 'lease event handler failed');
      }
      if (e.modRevision > this.revision) this.revision = e.modRevision;
    }
  }

  private broken(w: Watcher, reason: string, detach: boolean, err?: Error): void {
    if (this.watcher !== w || this.stopper.stopped) return;
    this.watcher = undefined;
    this.connected = false;
    this.clearPeriodic();
    if (detach) void w.cancel().catch(() => undefined);
    this.noticeNoLeader(err);
    if (this.brokenSince === undefined) {
      this.brokenSince = Date.now();
      this.o.logger.warn({ prefix: this.o.prefix, revision: this.revision, reason }, 'etcd watch broken; will re-list and resync');
    }
    void this.resyncLoop();
  }

  private noticeNoLeader(err: unknown): void {
    if (!isNoLeaderError(err) || this.noLeaderSince !== undefined) return;
    this.noLeaderSince = Date.now();
    this.o.logger.error(
      { prefix: this.o.prefix, revision: this.revision, err: etcdErrorText(err) },
      'etcd member has no leader (cut off from its cluster?); re-listing from another member',
    );
  }

  private schedulePeriodic(): void {
    this.clearPeriodic();
    const ms = this.o.resyncIntervalMs;
    if (!ms || this.stopper.stopped) return;
    this.periodicTimer = setTimeout(() => this.periodicResync(), ms);
    this.periodicTimer.unref();
  }

  private clearPeriodic(): void {
    if (this.periodicTimer) clearTimeout(this.periodicTimer);
    this.periodicTimer = undefined;
  }

  /** The periodic re-list: replace the (healthy) watch by a new list + watch. */
  private periodicResync(): void {
    this.periodicTimer = undefined;
    const w = this.watcher;
    if (!w || this.resyncing || this.stopper.stopped) return;
    this.watcher = undefined;
    this.periodicRun = true;
    void w.cancel().catch(() => undefined);
    this.o.logger.debug({ prefix: this.o.prefix, revision: this.revision }, 'periodic resync: re-listing');
    void this.resyncLoop();
  }

  /** Re-list until it works (bounded backoff), then watch again; again if it broke meanwhile. */
  private async resyncLoop(): Promise<void> {
    this.resyncPending = true;
    if (this.resyncing) return;
    this.resyncing = true;
    let warned = false;
    try {
      while (this.resyncPending && !this.stopper.stopped) {
        this.resyncPending = false;
        // a pause first (not for a periodic re-list): lets a restarting etcd come up, and
        // coalesces bursts of breaks
        const periodic = this.periodicRun;
        this.periodicRun = false;
        if (!periodic && !(await this.stopper.sleep(this.backoff.next()))) return;
        try {
          await this.listAndWatch(!this.listedOnce);
          if (this.stopper.stopped) return;
          // the backoff is reset (and the recovery logged) once etcd confirms the new watch:
          // a list can succeed on one member while the watch lands on a dead one
          this.resyncCount++;
        } catch (err) {
          this.connected = false;
          this.noticeNoLeader(err);
          if (!warned) {
            this.o.logger.warn({ err: etcdErrorText(err) }, 'etcd unreachable; retrying re-list with backoff');
            warned = true;
          } else {
            this.o.logger.debug({ err: etcdErrorText(err) }, 're-list failed');
          }
          this.resyncPending = true;
        }
      }
    } finally {
      this.resyncing = false;
    }
  }

  /** Stops watching (no more consumer calls after this resolves). */
  async close(): Promise<void> {
    this.stopper.stop();
    this.clearPeriodic();
    const w = this.watcher;
    this.watcher = undefined;
    if (w) {
      // cancel() waits for etcd's confirmation; don't let a dead etcd hold up shutdown
      await Promise.race([w.cancel().catch(() => undefined), new Promise<void>((r) => setTimeout(r, 1000).unref())]);
    }
  }
}
