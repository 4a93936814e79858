/**
 * A 3-member etcd cluster with one member killed: nodes keep their leases (renewals go to
 * the survivors) and their watches (re-listed and re-created on a survivor), and new nodes
 * still join. The member killed is the one serving the most watchers, so at least one
 * node's watch is cut.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { EtcdRouteSource, type EtcdSourceOptions } from '../../src/control/etcd-source';
import { formatPrefix } from '../../src/net/addr';
import { EtcdCluster, RecordingSink, flannelLeaseValue, memoryLogger, startEtcd, waitFor } from '../helpers/etcd';

const PREFIX = '/coreos.com/network';
const WATCHERS = 'etcd_debugging_mvcc_watcher_total';

function source(etcd: EtcdCluster, over: Partial<EtcdSourceOptions> & { publicIp: string }): EtcdRouteSource {
  return new EtcdRouteSource({
    etcd: etcd.etcdOptions(PREFIX),
    subnetFile: path.join(os.tmpdir(), 'overlayd-no-such-dir', 'subnet.env'),
    leaseTtlSeconds: 30,
    renewIntervalMs: 300,
    callTimeoutMs: 2000,
    logger: memoryLogger('info').logger,
    startTimeoutMs: 15_000,
    resyncBackoff: { initialMs: 100, maxMs: 1000 },
    ...over,
  });
}

t.test('3 members, one killed: leases and watches keep working', async (t) => {
  const etcd = await startEtcd(t, { members: 3 });
  const admin = await etcd.admin();
  await admin.put(`${PREFIX}/config`).value('{"Network":"10.244.0.0/16"}');

  const nodes = [1, 2, 3, 4].map((i) => {
    const logs = memoryLogger('info');
    const s = source(etcd, { publicIp: `192.0.2.${i}`, logger: logs.logger });
    return { s, logs, sink: new RecordingSink(), ip: `192.0.2.${i}`, subnet: '' };
  });
  t.teardown(() => Promise.all(nodes.map((n) => n.s.close())));
  const fatals: Error[] = [];
  for (const n of nodes) n.s.onFatal((e) => fatals.push(e));
  const started = await Promise.all(nodes.map((n) => n.s.start()));
  for (const [i, n] of nodes.entries()) {
    n.subnet = formatPrefix(started[i]?.lease.subnet ?? { addr: 0, len: 0 });
    await n.s.sync(n.sink);
  }
  await waitFor('every node sees the 3 others', () => nodes.every((n) => n.sink.table.size === 3), 3000);
  await waitFor('every watch confirmed by etcd', () => nodes.every((n) => n.s.stats().connected === true), 3000);

  // kill the member serving the most watchers (etcd's gauge can lag a little: poll, bounded)
  let counts: number[] = [];
  await waitFor('watcher gauges', async () => {
    counts = await Promise.all([0, 1, 2].map((i) => etcd.metric(i, WATCHERS)));
    return counts.reduce((a, b) => a + (Number.isNaN(b) ? 0 : b), 0) >= nodes.length;
  }, 5000, 100).catch(() => undefined);
  const victim = counts.indexOf(Math.max(...counts));
  t.comment(`watchers per member: ${counts.join(', ')}; killing member ${victim}`);
  t.ok((counts[victim] ?? 0) >= 1, 'the victim serves at least one node\'s watch');
  const killedAt = Date.now();
  await etcd.killMember(victim);
  t.notOk(etcd.running(victim));
  const survivors = [0, 1, 2].filter((i) => i !== victim);

  // cut watches are re-listed and re-created on survivors
  await waitFor('a cut watch to be noticed', () => nodes.some((n) => n.logs.msgs().some((m) => m.startsWith('etcd watch broken'))), 5000);
  await waitFor('every node\'s watch to be up again', () => nodes.every((n) => n.s.stats().connected === true), 15_000);
  t.ok(nodes.some((n) => n.s.resyncs >= 1), 'at least one watch was cut and re-listed');

  // a change after the kill reaches every node
  const writer = await etcd.client(survivors.map((i) => etcd.clientUrl(i)));
  await writer.put(`${PREFIX}/subnets/10.244.77.0-24`).value(flannelLeaseValue('192.0.2.77'));
  await waitFor('the new route everywhere', () => nodes.every((n) => n.sink.table.get('10.244.77.0/24') === '192.0.2.77'), 5000);

  // every lease keeps being renewed through the survivors and is still held
  const renewedAfterKill = (n: (typeof nodes)[number]) =>
    n.logs.lines.some((l) => l['msg'] === 'lease renewed' && Number(l['time']) > killedAt + 200);
  await waitFor('renewals after the kill', () => nodes.every(renewedAfterKill), 10_000);
  for (const n of nodes) {
    t.equal(await writer.get(n.s.leaseKey ?? '').string(), flannelLeaseValue(n.ip), `${n.ip} still holds ${n.subnet}`);
    t.equal(n.s.stats().leaseValid, true);
  }

  // a node joining now (the dead member still among its endpoints) gets a lease, seen by all
  const late = source(etcd, { publicIp: '192.0.2.9' });
  t.teardown(() => late.close());
  const r = await late.start();
  const ls = formatPrefix(r.lease.subnet);
  await waitFor('the late node seen by all', () => nodes.every((n) => n.sink.table.get(ls) === '192.0.2.9'), 5000);

  t.notOk(nodes.some((n) => n.sink.calls.some((c) => c.op === 'remove')), 'no route removed at any point');
  t.same(fatals, []);
});
