/**
 * Route sync against a real etcd: hand-written flannel leases become routes, compaction
 * past the watch's revision and etcd outages end in a re-list that applies only the
 * difference.
 */
import * as path from 'node:path';
import * as os from 'node:os';
import t from 'tap';
import { EtcdRouteSource, type EtcdSourceOptions } from '../../src/control/etcd-source';
import { parseLeaseValue } from '../../src/control/etcd-schema';
import { formatIp } from '../../src/net/addr';
import { silentLogger } from '../../src/ops/log';
import { EtcdCluster, RecordingSink, flannelLeaseValue, memoryLogger, sleep, startEtcd, waitFor } from '../helpers/etcd';

const PREFIX = '/coreos.com/network';
const SUBNETS = `${PREFIX}/subnets/`;
const key = (third: number) => `${SUBNETS}10.244.${third}.0-24`;

function source(etcd: EtcdCluster, over: Partial<EtcdSourceOptions> = {}): EtcdRouteSource {
  return new EtcdRouteSource({
    etcd: etcd.etcdOptions(PREFIX),
    publicIp: '192.0.2.1',
    subnetFile: path.join(os.tmpdir(), 'overlayd-no-such-dir', 'subnet.env'),
    leaseTtlSeconds: 60,
    logger: silentLogger(),
    startTimeoutMs: 10_000,
    resyncBackoff: { initialMs: 100, maxMs: 1000 },
    ...over,
  });
}

/** What etcd says the peer routes are (every readable lease but `own`), as "subnet>ip". */
async function etcdRoutes(etcd: EtcdCluster, ownKey: string): Promise<string[]> {
  const all = await etcd.dump(SUBNETS);
  return Object.entries(all)
    .filter(([k]) => k !== ownKey)
    .flatMap(([k, v]) => {
      const p = parseLeaseValue(v);
      return p.ok ? [`${k.slice(SUBNETS.length).replace('-', '/')}>${formatIp(p.value.publicIp)}`] : [];
    })
    .sort();
}

t.test('a lease written by hand the flannel way becomes a route; its deletion removes it', async (t) => {
  const etcd = await startEtcd(t);
  const admin = await etcd.admin();
  await admin.put(`${PREFIX}/config`).value('{"Network":"10.244.0.0/16","SubnetMin":"10.244.100.0"}');
  const logs = memoryLogger('info');
  const s = source(etcd, { logger: logs.logger });
  t.teardown(() => s.close());
  let fatal: Error | undefined;
  s.onFatal((e) => (fatal = e));
  await s.start();
  const sink = new RecordingSink();
  await s.sync(sink);
  t.same(sink.calls, [], 'no peers yet');

  const t0 = Date.now();
  await admin.put(key(5)).value('{"PublicIP":"192.0.2.55","PublicIPv6":null}');
  await waitFor('the upsert', () => sink.table.get('10.244.5.0/24') === '192.0.2.55', 1000, 5);
  // the latency is a diagnostic (a loaded machine stalls it); that the route came is the check
  t.comment(`route added ${Date.now() - t0} ms after the put`);
  t.same(sink.calls.map((c) => c.op), ['upsert']);

  // another backend's lease (extra fields) is a route too
  await admin.put(key(6)).value('{"PublicIP":"192.0.2.66","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"}}');
  await waitFor('the vxlan lease route', () => sink.table.get('10.244.6.0/24') === '192.0.2.66', 1000, 5);

  // the same value written again (a renewal by flannel): no sink call
  await admin.put(key(5)).value('{"PublicIP":"192.0.2.55","PublicIPv6":null}');
  // a malformed lease: skipped with one warning, nothing fatal
  await admin.put(key(7)).value('{"PublicIP":"not-an-ip"}');
  await waitFor('the warning', () => logs.msgs().some((m) => m.startsWith('lease skipped: malformed value')), 1000, 5);

  const t1 = Date.now();
  await admin.delete().key(key(5));
  await waitFor('the removal', () => !sink.table.has('10.244.5.0/24'), 1000, 5);
  t.comment(`route removed ${Date.now() - t1} ms after the delete`);
  t.same(sink.callsFor('10.244.5.0/24').map((c) => c.op), ['upsert', 'remove'], 'exactly one upsert and one remove');
  t.equal(sink.callsFor('10.244.7.0/24').length, 0, 'malformed lease: no route');
  t.equal(logs.msgs().filter((m) => m.startsWith('lease skipped: malformed value')).length, 1, 'one warning');
  t.equal(fatal, undefined, 'nothing fatal');

  // compacting while the watch is caught up changes nothing
  await etcd.compact();
  await admin.put(key(8)).value(flannelLeaseValue('192.0.2.88'));
  await waitFor('a route after the compaction', () => sink.table.get('10.244.8.0/24') === '192.0.2.88', 2000, 5);
  t.equal(s.resyncs, 0, 'no re-list needed');
  t.same(sink.snapshot(), await etcdRoutes(etcd, s.leaseKey ?? ''));
});

t.test('compaction past the watch revision while routes change: re-list, apply only the difference', async (t) => {
  const etcd = await startEtcd(t);
  const admin = await etcd.admin();
  await admin.put(`${PREFIX}/config`).value('{"Network":"10.244.0.0/16","SubnetMin":"10.244.100.0"}');
  for (const i of [2, 3, 4]) await admin.put(key(i)).value(flannelLeaseValue(`192.0.2.${i}`));

  const logs = memoryLogger('info');
  let lists = 0;
  let compactedAt = 0;
  const s = source(etcd, {
    logger: logs.logger,
    testHooks: {
      // runs after each list, before its watch is created
      beforeWatch: async (listRevision) => {
        lists++;
        if (lists !== 2) return;
        // the routes change after the re-list and before the watch starts ...
        await admin.put(key(3)).value(flannelLeaseValue('192.0.2.33')); // peer moved
        await admin.delete().key(key(4)); // peer gone
        await admin.put(key(5)).value(flannelLeaseValue('192.0.2.5')); // new peer
        await admin.put(key(2)).value(flannelLeaseValue('192.0.2.2')); // rewritten, unchanged
        // ... and the history the watch needs is compacted away
        compactedAt = await etcd.compact();
        t.ok(compactedAt > listRevision + 1, `compacted to ${compactedAt}, past the watch start ${listRevision + 1}`);
      },
    },
  });
  t.teardown(() => s.close());
  await s.start();
  const sink = new RecordingSink();
  await s.sync(sink);
  t.same(sink.snapshot(), ['10.244.2.0/24>192.0.2.2', '10.244.3.0/24>192.0.2.3', '10.244.4.0/24>192.0.2.4']);
  sink.calls.length = 0;

  // break the watch: etcd restarts; the re-list after it triggers the hook above
  await etcd.restart();
  await waitFor('the third list', () => lists >= 3, 15_000);
  await waitFor('routes equal to etcd', async () => sink.snapshot().join() === (await etcdRoutes(etcd, s.leaseKey ?? '')).join(), 5000);
  t.same(sink.snapshot(), ['10.244.2.0/24>192.0.2.2', '10.244.3.0/24>192.0.2.33', '10.244.5.0/24>192.0.2.5']);
  t.ok(logs.msgs().some((m) => m.startsWith('etcd watch broken')), 'the break is logged');
  t.ok(
    logs.lines.some((l) => String(l['reason'] ?? '').startsWith('watch cancelled by etcd')),
    'the compaction cancelled the watch (and was logged)',
  );
  t.same(
    sink.calls.map((c) => `${c.op} ${c.subnet}`).sort(),
    ['remove 10.244.4.0/24', 'upsert 10.244.3.0/24', 'upsert 10.244.5.0/24'],
    'only the difference; the unchanged route was neither removed nor re-added',
  );

  // and the new watch works
  await admin.put(key(9)).value(flannelLeaseValue('192.0.2.9'));
  await waitFor('a change after the resync', () => sink.table.get('10.244.9.0/24') === '192.0.2.9', 2000);
});

t.test('etcd outage: routes stay in force, the watch resumes, a later change arrives', async (t) => {
  const etcd = await startEtcd(t);
  const admin = await etcd.admin();
  await admin.put(`${PREFIX}/config`).value('{"Network":"10.244.0.0/16","SubnetMin":"10.244.100.0"}');
  await admin.put(key(2)).value(flannelLeaseValue('192.0.2.2'));
  await admin.put(key(3)).value(flannelLeaseValue('192.0.2.3'));
  const logs = memoryLogger('info');
  const s = source(etcd, { logger: logs.logger, leaseTtlSeconds: 30, renewIntervalMs: 1000, callTimeoutMs: 2000 });
  t.teardown(() => s.close());
  let fatal: Error | undefined;
  s.onFatal((e) => (fatal = e));
  await s.start();
  const sink = new RecordingSink();
  await s.sync(sink);
  const before = sink.snapshot();
  t.equal(before.length, 2);
  await waitFor('stats: connected', () => s.stats().connected === true, 3000);

  await etcd.stopAll();
  const outageMs = 5000;
  await sleep(outageMs);
  t.same(sink.snapshot(), before, 'routes stay in force while etcd is down');
  t.equal(sink.calls.length, 2, 'no sink call during the outage');
  t.equal(s.stats().connected, false, 'stats: disconnected');
  t.equal(s.stats().leaseValid, true, 'the lease is still valid (TTL not over)');
  t.ok(logs.msgs().some((m) => m.startsWith('etcd watch broken')), 'outage logged');

  await etcd.startAll();
  await waitFor('the watch to resume', () => logs.msgs().some((m) => m.startsWith('etcd watch resumed')), 15_000);
  await admin.put(key(4)).value(flannelLeaseValue('192.0.2.4'));
  await waitFor('a change made after etcd returned', () => sink.table.get('10.244.4.0/24') === '192.0.2.4', 5000);
  t.same(sink.calls.map((c) => `${c.op} ${c.subnet}`), ['upsert 10.244.2.0/24', 'upsert 10.244.3.0/24', 'upsert 10.244.4.0/24'], 'no flapping');
  await waitFor('a renewal after the outage', () => logs.lines.some((l) => l['msg'] === 'lease renewed' && l['failedTries'] !== undefined), 10_000);
  t.ok(logs.msgs().some((m) => m.startsWith('lease renewal failed')), 'failed renewals logged (once)');
  t.equal(logs.msgs().filter((m) => m.startsWith('lease renewal failed')).length, 1, 'one line per outage, not per try');
  t.equal(await admin.get(s.leaseKey ?? '').string(), flannelLeaseValue('192.0.2.1'), 'own lease still there');
  await waitFor('stats: connected again', () => s.stats().connected === true, 5000);
  t.equal(fatal, undefined);
});
