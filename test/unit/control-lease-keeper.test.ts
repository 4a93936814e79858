/**
 * The lease keeper's state machine (src/control/lease.ts), transition by transition, with a
 * fake etcd (LeaseOps in memory, each call optionally held at a gate) and a fake clock (no
 * sleeps). The last test checks that every transition of LEASE_TRANSITIONS was taken.
 */
import t from 'tap';
import type { Etcd3 } from 'etcd3';
import pino from 'pino';
import {
  DUPLICATE_TAKEBACKS, LEASE_TRANSITIONS, LeaseKeeper, type KeeperClock, type LeaseOps, type LeaseState,
} from '../../src/control/lease';
import { formatLeaseValue, subnetKey } from '../../src/control/etcd-schema';
import type { KvEntry } from '../../src/control/watch';
import { LeaseError } from '../../src/errors';
import { parseIp } from '../../src/net/addr';

const PREFIX = '/coreos.com/network';
const SUBNET = { addr: parseIp('10.244.3.0') as number, len: 24 };
const KEY = subnetKey(PREFIX, SUBNET);
const OWN = parseIp('192.0.2.1') as number;
const OURS = formatLeaseValue(OWN);
const OTHER = formatLeaseValue(parseIp('192.0.2.9') as number);

/** Lets every pending promise callback run (no timers involved). */
async function flush(): Promise<void> {
  for (let i = 0; i < 20; i++) await new Promise<void>((r) => setImmediate(r));
}

class FakeClock implements KeeperClock {
  t = 1_000_000;
  private seq = 0;
  private timers: { at: number; id: number; fn: () => void }[] = [];
  now(): number {
    return this.t;
  }
  setTimer(fn: () => void, ms: number): () => void {
    const id = ++this.seq;
    this.timers.push({ at: this.t + ms, id, fn });
    return () => {
      this.timers = this.timers.filter((x) => x.id !== id);
    };
  }
  get pending(): number {
    return this.timers.length;
  }
  /** Moves time on by ms, firing due timers in order; lets their effects run. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (let guard = 0; guard < 1000; guard++) {
      this.timers.sort((a, b) => a.at - b.at || a.id - b.id);
      const next = this.timers[0];
      if (!next || next.at > end) break;
      this.timers.shift();
      this.t = next.at;
      next.fn();
      await flush();
    }
    this.t = end;
    await flush();
  }
}

/** etcd in memory: keys, etcd leases, revisions. */
class FakeEtcd implements LeaseOps {
  rev = 10;
  readonly kv = new Map<string, KvEntry>();
  readonly leases = new Set<string>();
  private nextLease = 100;
  readonly calls: string[] = [];
  /** thrown by the next keepalive calls while set */
  keepaliveError: Error | undefined;
  /** thrown by the next get/grant/put calls while set */
  writeError: Error | undefined;
  private gate: Promise<void> | undefined;
  private release: (() => void) | undefined;

  /** Holds every following call until the returned function is called. */
  hold(): () => void {
    this.gate = new Promise<void>((r) => (this.release = r));
    return () => {
      this.gate = undefined;
      this.release?.();
    };
  }
  private async enter(what: string): Promise<void> {
    this.calls.push(what);
    if (this.gate) await this.gate;
  }
  async keepalive(id: string): Promise<number> {
    await this.enter(`keepalive ${id}`);
    if (this.keepaliveError) throw this.keepaliveError;
    return this.leases.has(id) ? 60 : 0;
  }
  async get(key: string): Promise<KvEntry | undefined> {
    await this.enter(`get`);
    if (this.writeError) throw this.writeError;
    return this.kv.get(key);
  }
  async grant(): Promise<{ id: string; ttl: number }> {
    await this.enter('grant');
    if (this.writeError) throw this.writeError;
    const id = String(++this.nextLease);
    this.leases.add(id);
    return { id, ttl: 60 };
  }
  async createIfAbsent(key: string, value: string, leaseId: string): Promise<boolean> {
    await this.enter('create');
    if (this.writeError) throw this.writeError;
    if (this.kv.has(key)) return false;
    this.put(key, value, leaseId);
    return true;
  }
  async putIfModRevision(key: string, value: string, leaseId: string, modRevision: number): Promise<boolean> {
    await this.enter('reattach');
    if (this.writeError) throw this.writeError;
    if (this.kv.get(key)?.modRevision !== modRevision) return false;
    this.put(key, value, leaseId);
    return true;
  }
  /** A write by anyone; returns the new entry (what the watch would deliver). */
  put(key: string, value: string, lease: string): KvEntry {
    const old = this.kv.get(key);
    const e: KvEntry = { key, value, lease, modRevision: ++this.rev, createRevision: old?.createRevision ?? this.rev };
    this.kv.set(key, e);
    return e;
  }
  grantNow(): string {
    const id = String(++this.nextLease);
    this.leases.add(id);
    return id;
  }
}

/** Every (from -> to) transition any keeper of this file took. */
const taken = new Set<string>();

function setup(leaseId = '50') {
  const etcd = new FakeEtcd();
  if (leaseId !== '0') etcd.leases.add(leaseId);
  etcd.put(KEY, OURS, leaseId);
  const clock = new FakeClock();
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level: 'debug' }, { write: (s: string) => void lines.push(JSON.parse(s) as Record<string, unknown>) });
  const fatals: LeaseError[] = [];
  const keeper = new LeaseKeeper({
    client: undefined as unknown as Etcd3, // never used: ops is given
    ops: etcd,
    clock,
    random: () => 0.5,
    prefix: PREFIX,
    subnet: SUBNET,
    publicIp: OWN,
    ttlSeconds: 60, // renewal every 20 s
    leaseId,
    logger,
    onFatal: (e) => fatals.push(e),
  });
  const record = () => {
    const h = keeper.history;
    for (let i = 1; i < h.length; i++) taken.add(`${h[i - 1]}->${h[i]}`);
  };
  const msgs = () => lines.map((l) => String(l['msg']));
  return { etcd, clock, keeper, fatals, lines, msgs, record };
}

type Setup = ReturnType<typeof setup>;
const states = (x: Setup): LeaseState[] => {
  x.record();
  return [...x.keeper.history];
};

t.test('held -> renewing -> held: renewal every TTL/3, expiry moved on', async (t) => {
  const x = setup();
  x.keeper.start();
  t.equal(x.keeper.state, 'held');
  await x.clock.advance(19_999);
  t.same(x.etcd.calls, [], 'not before TTL/3');
  await x.clock.advance(1);
  t.same(x.etcd.calls, ['keepalive 50']);
  t.equal(x.keeper.state, 'held');
  t.equal(x.keeper.expiresAt?.getTime(), x.clock.now() + 60_000);
  await x.clock.advance(40_000);
  t.equal(x.etcd.calls.length, 3, 'again and again');
  t.same(states(x), ['held', 'renewing', 'held', 'renewing', 'held', 'renewing', 'held']);
  t.ok(x.keeper.valid);
  x.keeper.close();
  t.equal(x.keeper.state, 'stopped');
  t.equal(x.clock.pending, 0, 'no timer left after close');
  t.equal(states(x).at(-1), 'stopped');
});

t.test('renewing -> renew-failing -> renewing -> held: etcd unreachable, retried with backoff, then renewed', async (t) => {
  const x = setup();
  x.keeper.start();
  x.etcd.keepaliveError = new Error('14 UNAVAILABLE: connection refused');
  await x.clock.advance(20_000);
  t.equal(x.keeper.state, 'renew-failing');
  t.ok(x.keeper.renewalFailing);
  t.ok(x.keeper.valid, 'still valid until it expires');
  await x.clock.advance(1000); // backoff 1 s (jitter fixed at the middle)
  await x.clock.advance(2000);
  t.equal(x.etcd.calls.length, 3, 'retried after 1 s and 2 s');
  t.equal(x.msgs().filter((m) => m.startsWith('lease renewal failed')).length, 1, 'warned once');
  x.etcd.keepaliveError = undefined;
  await x.clock.advance(4000);
  t.equal(x.keeper.state, 'held');
  t.notOk(x.keeper.renewalFailing);
  t.match(x.lines.find((l) => l['msg'] === 'lease renewed') ?? {}, { failedTries: 3 });
  t.same(states(x), ['held', 'renewing', 'renew-failing', 'renewing', 'renew-failing', 'renewing', 'renew-failing', 'renewing', 'held']);
  x.keeper.close();
});

t.test('renew-failing until expiry: invalid once expired, valid again after a renewal', async (t) => {
  const x = setup();
  x.keeper.start();
  x.etcd.keepaliveError = new Error('deadline exceeded');
  await x.clock.advance(59_000);
  t.ok(x.keeper.valid);
  await x.clock.advance(2000);
  t.notOk(x.keeper.valid, 'expired');
  x.etcd.keepaliveError = undefined;
  await x.clock.advance(20_000);
  t.ok(x.keeper.valid);
  states(x);
  x.keeper.close();
});

t.test('renewing -> lost -> reacquiring -> held: the etcd lease is gone; a new one, the key re-created', async (t) => {
  const x = setup();
  x.keeper.start();
  x.etcd.leases.delete('50');
  x.etcd.kv.delete(KEY); // etcd deletes the key with its lease
  await x.clock.advance(20_000);
  t.equal(x.keeper.state, 'held');
  t.equal(x.keeper.currentLeaseId, '101');
  t.same(x.etcd.kv.get(KEY)?.lease, '101');
  t.same(x.etcd.calls, ['keepalive 50', 'get', 'grant', 'create']);
  t.ok(x.msgs().includes('etcd lease lost (expired or revoked); re-acquiring the subnet'));
  t.ok(x.msgs().includes('subnet lease re-acquired (same subnet)'));
  t.same(states(x), ['held', 'renewing', 'lost', 'reacquiring', 'held']);
  t.same(x.fatals, []);
  x.keeper.close();
});

t.test('held -> lost -> reacquiring -> held: key deleted, re-created on our live etcd lease', async (t) => {
  const x = setup();
  x.keeper.start();
  x.etcd.kv.delete(KEY);
  x.keeper.observe(undefined);
  t.notOk(x.keeper.valid, 'invalid while the key is gone');
  await flush();
  t.equal(x.keeper.state, 'held');
  t.equal(x.etcd.kv.get(KEY)?.lease, '50', 'on the same etcd lease');
  t.ok(x.keeper.valid);
  t.same(states(x), ['held', 'lost', 'reacquiring', 'held']);
  x.keeper.close();
});

t.test('reacquiring -> lost -> reacquiring: a failed restore is retried with backoff; warned once', async (t) => {
  const x = setup();
  x.keeper.start();
  x.etcd.kv.delete(KEY);
  x.etcd.writeError = new Error('14 UNAVAILABLE');
  x.keeper.observe(undefined);
  await flush();
  t.equal(x.keeper.state, 'lost');
  await x.clock.advance(250);
  await x.clock.advance(500);
  t.equal(x.etcd.calls.filter((c) => c === 'get').length, 3);
  t.equal(x.msgs().filter((m) => m === 'could not restore the lease yet; retrying').length, 1);
  x.etcd.writeError = undefined;
  await x.clock.advance(1000);
  t.equal(x.keeper.state, 'held');
  t.same(states(x), ['held', 'lost', 'reacquiring', 'lost', 'reacquiring', 'lost', 'reacquiring', 'lost', 'reacquiring', 'held']);
  x.keeper.close();
});

t.test('held -> reserved: an operator makes our key a reservation; no renewal afterwards', async (t) => {
  const x = setup();
  x.keeper.start();
  x.keeper.observe(x.etcd.put(KEY, OURS, '0'));
  t.equal(x.keeper.state, 'reserved');
  t.equal(x.keeper.currentLeaseId, '0');
  t.equal(x.keeper.expiresAt, undefined);
  t.ok(x.keeper.valid);
  await x.clock.advance(120_000);
  t.same(x.etcd.calls, [], 'nothing renewed');
  t.same(states(x), ['held', 'reserved']);
  x.keeper.close();
});

t.test('reserved -> lost -> reacquiring -> held: the reservation is removed; a normal lease again', async (t) => {
  const x = setup('0');
  x.keeper.start();
  t.equal(x.keeper.state, 'reserved');
  x.etcd.kv.delete(KEY);
  x.keeper.observe(undefined);
  await flush();
  t.equal(x.keeper.state, 'held');
  t.equal(x.etcd.kv.get(KEY)?.lease, '101');
  t.ok(x.keeper.expiresAt);
  await x.clock.advance(20_000);
  t.ok(x.etcd.calls.includes('keepalive 101'), 'renewed again');
  t.same(states(x), ['reserved', 'lost', 'reacquiring', 'held', 'renewing', 'held']);
  x.keeper.close();
});

t.test('reacquiring -> reserved: the restore finds a reservation', async (t) => {
  const x = setup();
  x.keeper.start();
  const release = x.etcd.hold();
  x.keeper.observe(undefined); // say, a stale delete event
  await flush();
  t.equal(x.keeper.state, 'reacquiring');
  x.etcd.put(KEY, OURS, '0');
  release();
  await flush();
  t.equal(x.keeper.state, 'reserved');
  t.same(states(x), ['held', 'lost', 'reacquiring', 'reserved']);
  x.keeper.close();
});

t.test('reacquiring -> conflict: another node holds the subnet; onFatal once, nothing written', async (t) => {
  const x = setup();
  x.keeper.start();
  const e = x.etcd.put(KEY, OTHER, x.etcd.grantNow());
  x.keeper.observe(e);
  t.notOk(x.keeper.valid);
  await flush();
  t.equal(x.keeper.state, 'conflict');
  t.equal(x.fatals.length, 1);
  t.ok(x.fatals[0] instanceof LeaseError);
  t.match(x.fatals[0]?.message, 'subnet 10.244.3.0/24 of this node (PublicIP 192.0.2.1) is now held by node 192.0.2.9');
  t.same(x.etcd.calls, ['get'], 'no write');
  x.keeper.observe(undefined);
  await x.clock.advance(60_000);
  t.equal(x.fatals.length, 1, 'final: nothing after it');
  t.equal(x.clock.pending, 0);
  t.same(states(x), ['held', 'lost', 'reacquiring', 'conflict']);
});

t.test('key moved to another etcd lease once (an operator): re-attached to ours', async (t) => {
  const x = setup();
  x.keeper.start();
  x.keeper.observe(x.etcd.put(KEY, OURS, x.etcd.grantNow()));
  t.ok(x.keeper.valid, 'still ours meanwhile');
  await flush();
  t.equal(x.etcd.kv.get(KEY)?.lease, '50');
  t.ok(x.msgs().includes('lease key re-attached to our etcd lease'));
  t.same(states(x), ['held', 'lost', 'reacquiring', 'held']);
  t.same(x.fatals, []);
  x.keeper.close();
});

t.test(`another writer with our PublicIP takes the key back ${DUPLICATE_TAKEBACKS} times: conflict naming its etcd lease; writes bounded`, async (t) => {
  const x = setup();
  x.keeper.start();
  const other = x.etcd.grantNow();
  for (let i = 0; i < 10 && x.keeper.state !== 'conflict'; i++) {
    const e = x.etcd.put(KEY, OURS, other);
    x.keeper.observe(e);
    x.keeper.observe(e); // the same write seen again (e.g. by a re-list) counts once
    await flush();
  }
  t.equal(x.keeper.state, 'conflict');
  t.equal(x.etcd.calls.filter((c) => c === 'reattach').length, DUPLICATE_TAKEBACKS - 1, 'took it back only twice');
  t.equal(x.fatals.length, 1);
  t.match(x.fatals[0]?.message, `etcd lease ${other}`);
  t.match(x.fatals[0]?.message, 'two nodes claim PublicIP 192.0.2.1');
  t.match(x.fatals[0]?.message, KEY);
  states(x);
});

t.test('takebacks spread over more than the window are an operator at work, not a duplicate', async (t) => {
  const x = setup();
  x.keeper.start();
  for (let i = 0; i < 4; i++) {
    x.keeper.observe(x.etcd.put(KEY, OURS, x.etcd.grantNow()));
    await flush();
    await x.clock.advance(31_000);
  }
  t.not(x.keeper.state, 'conflict');
  t.same(x.fatals, []);
  states(x);
  x.keeper.close();
});

t.test('events while a keepalive is in flight: renewing -> lost, renewing -> reserved, renewing -> stopped', async (t) => {
  await t.test('key deleted during the keepalive', async (t) => {
    const x = setup();
    x.keeper.start();
    const release = x.etcd.hold();
    await x.clock.advance(20_000);
    t.equal(x.keeper.state, 'renewing');
    x.etcd.kv.delete(KEY);
    x.keeper.observe(undefined);
    release();
    await flush();
    t.equal(x.keeper.state, 'held');
    t.equal(x.etcd.kv.get(KEY)?.lease, '50');
    t.same(states(x).slice(0, 3), ['held', 'renewing', 'lost']);
    x.keeper.close();
  });
  await t.test('made a reservation during the keepalive', async (t) => {
    const x = setup();
    x.keeper.start();
    const release = x.etcd.hold();
    await x.clock.advance(20_000);
    x.keeper.observe(x.etcd.put(KEY, OURS, '0'));
    release();
    await flush();
    t.equal(x.keeper.state, 'reserved');
    t.same(states(x), ['held', 'renewing', 'reserved']);
    x.keeper.close();
  });
  await t.test('closed during the keepalive', async (t) => {
    const x = setup();
    x.keeper.start();
    const release = x.etcd.hold();
    await x.clock.advance(20_000);
    x.keeper.close();
    release();
    await flush();
    t.equal(x.keeper.state, 'stopped');
    t.equal(x.clock.pending, 0);
    t.same(states(x), ['held', 'renewing', 'stopped']);
  });
});

t.test('renew-failing -> lost / reserved / stopped', async (t) => {
  for (const what of ['deleted', 'reservation', 'close'] as const) {
    const x = setup();
    x.keeper.start();
    x.etcd.keepaliveError = new Error('14 UNAVAILABLE');
    await x.clock.advance(20_000);
    t.equal(x.keeper.state, 'renew-failing');
    x.etcd.keepaliveError = undefined;
    if (what === 'deleted') {
      x.etcd.kv.delete(KEY);
      x.keeper.observe(undefined);
      await flush();
      t.equal(x.keeper.state, 'held', 'deleted: restored');
    } else if (what === 'reservation') {
      x.keeper.observe(x.etcd.put(KEY, OURS, '0'));
      t.equal(x.keeper.state, 'reserved');
    } else {
      x.keeper.close();
      t.equal(x.keeper.state, 'stopped');
    }
    states(x);
    x.keeper.close();
  }
});

t.test('conflict from every live state (a duplicate PublicIP seen by the watch)', async (t) => {
  const dup = async (x: Setup) => {
    const other = x.etcd.grantNow();
    for (let i = 0; i < DUPLICATE_TAKEBACKS; i++) x.keeper.observe(x.etcd.put(KEY, OURS, other));
  };
  // held: the observations arrive back to back (the restores are still in flight)
  for (const from of ['held', 'renewing', 'renew-failing', 'reserved', 'lost'] as const) {
    const x = setup(from === 'reserved' ? '0' : '50');
    x.keeper.start();
    if (from === 'renewing') {
      x.etcd.hold();
      await x.clock.advance(20_000);
    } else if (from === 'renew-failing') {
      x.etcd.keepaliveError = new Error('14 UNAVAILABLE');
      await x.clock.advance(20_000);
    } else if (from === 'lost') {
      x.etcd.writeError = new Error('14 UNAVAILABLE');
      x.keeper.observe(undefined);
      await flush();
    }
    t.equal(x.keeper.state, from);
    const h0 = x.keeper.history.length;
    if (from === 'held' || from === 'renewing' || from === 'renew-failing' || from === 'reserved') {
      // one takeback observed right in this state, then the others: the last one ends it
      x.etcd.hold();
      await dup(x);
    } else {
      await dup(x);
    }
    t.equal(x.keeper.state, 'conflict', `from ${from}`);
    t.equal(x.keeper.history[h0], from === 'lost' ? 'conflict' : 'lost', 'went through the expected states');
    t.equal(x.fatals.length, 1);
    states(x);
  }
  // the direct edges into conflict
  const direct = setup();
  direct.keeper.start();
  direct.keeper.dispatch({ type: 'conflict', err: new LeaseError('test') });
  t.equal(direct.keeper.state, 'conflict');
  states(direct);
  for (const from of ['renewing', 'renew-failing', 'reserved'] as const) {
    const x = setup(from === 'reserved' ? '0' : '50');
    x.keeper.start();
    if (from === 'renewing') {
      x.etcd.hold();
      await x.clock.advance(20_000);
    } else if (from === 'renew-failing') {
      x.etcd.keepaliveError = new Error('14 UNAVAILABLE');
      await x.clock.advance(20_000);
    }
    t.equal(x.keeper.state, from);
    x.keeper.dispatch({ type: 'conflict', err: new LeaseError('test') });
    t.equal(x.keeper.state, 'conflict');
    states(x);
  }
});

t.test('stopped from lost, reacquiring, reserved: no call, no timer afterwards', async (t) => {
  for (const from of ['lost', 'reacquiring', 'reserved'] as const) {
    const x = setup(from === 'reserved' ? '0' : '50');
    x.keeper.start();
    if (from === 'lost') {
      x.etcd.writeError = new Error('14 UNAVAILABLE');
      x.keeper.observe(undefined);
      await flush();
    } else if (from === 'reacquiring') {
      const release = x.etcd.hold();
      x.keeper.observe(undefined);
      await flush();
      x.keeper.close();
      release();
      await flush();
    }
    if (from !== 'reacquiring') {
      t.equal(x.keeper.state, from);
      x.keeper.close();
    }
    const calls = x.etcd.calls.length;
    await x.clock.advance(120_000);
    t.equal(x.keeper.state, 'stopped');
    t.equal(x.etcd.calls.length, calls, `from ${from}: nothing after close`);
    t.equal(x.clock.pending, 0);
    states(x);
  }
});

t.test('an impossible transition throws (the table is enforced)', async (t) => {
  const x = setup();
  const k = x.keeper as unknown as { to(s: LeaseState): void };
  t.throws(() => k.to('reacquiring'), /no transition held -> reacquiring/);
  x.keeper.close();
});

t.test('every transition of LEASE_TRANSITIONS was taken by the tests above', async (t) => {
  const all = Object.entries(LEASE_TRANSITIONS).flatMap(([from, tos]) => tos.map((to) => `${from}->${to}`));
  const missing = all.filter((tr) => !taken.has(tr));
  t.same(missing, [], `taken: ${[...taken].sort().join(', ')}`);
  const unknown = [...taken].filter((tr) => !all.includes(tr));
  t.same(unknown, [], 'and none outside the table');
});
