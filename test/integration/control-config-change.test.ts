/**
 * The network config changing while running (real etcd): a change that matters (Network,
 * SubnetLen, Backend.Port, Backend.Type, a range without our subnet) is fatal with a
 * ConfigError naming the old and new values; anything else is logged and ignored. And the
 * periodic re-list (resyncIntervalMs) runs without touching routes that did not change.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { EtcdRouteSource, type EtcdSourceOptions } from '../../src/control/etcd-source';
import { ConfigError } from '../../src/errors';
import { formatPrefix } from '../../src/net/addr';
import { RecordingSink, flannelLeaseValue, memoryLogger, sleep, startEtcd, waitFor, type EtcdCluster } from '../helpers/etcd';

const PREFIX = '/coreos.com/network';
const CONFIG = `${PREFIX}/config`;
const BASE = '{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.20.0","Backend":{"Type":"udp","Port":8285}}';

async function setup(t: Test, over: Partial<EtcdSourceOptions> = {}, etcdIn?: EtcdCluster) {
  const etcd = etcdIn ?? (await startEtcd(t));
  const admin = await etcd.admin();
  await admin.put(CONFIG).value(BASE);
  const logs = memoryLogger('info');
  const s = new EtcdRouteSource({
    etcd: etcd.etcdOptions(PREFIX),
    publicIp: '192.0.2.1',
    subnetFile: path.join(os.tmpdir(), 'overlayd-no-such-dir', 'subnet.env'),
    leaseTtlSeconds: 60,
    logger: logs.logger,
    startTimeoutMs: 10_000,
    resyncBackoff: { initialMs: 100, maxMs: 1000 },
    ...over,
  });
  t.teardown(() => s.close());
  const fatals: Error[] = [];
  s.onFatal((e) => fatals.push(e));
  const started = await s.start();
  const sink = new RecordingSink();
  await s.sync(sink);
  return { etcd, admin, s, logs, fatals, sink, subnet: formatPrefix(started.lease.subnet) };
}

t.test('config changes that do not matter are logged and ignored', async (t) => {
  const x = await setup(t);
  // whitespace and field order only
  await x.admin.put(CONFIG).value(` { "Backend": {"Port": 8285, "Type": "udp"},\n "SubnetMax":"10.244.20.0", "SubnetMin":"10.244.10.0", "Network": "10.244.0.0/16" }`);
  await waitFor('logged', () => x.logs.msgs().includes('network config rewritten without a change that matters; ignored'), 5000);
  // a wider range still containing our subnet
  await x.admin.put(CONFIG).value('{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.0","SubnetMax":"10.244.200.0","Backend":{"Type":"udp","Port":8285}}');
  await waitFor('logged', () => x.logs.msgs().includes('network config changed in a way this node does not depend on; ignored'), 5000);
  // an invalid config and a deleted one: errors, and the config in force is kept
  await x.admin.put(CONFIG).value('{"Network":"10.244.0.0/16", oops');
  await waitFor('logged', () => x.logs.msgs().some((m) => m.startsWith('network config in etcd is now invalid')), 5000);
  await x.admin.delete().key(CONFIG);
  await waitFor('logged', () => x.logs.msgs().some((m) => m.startsWith('network config deleted from etcd')), 5000);
  await x.admin.put(CONFIG).value(BASE);
  await sleep(500);
  t.same(x.fatals, [], 'no fatal error');
  t.equal(x.s.stats().leaseValid, true);
});

const fatalCases: Array<[string, string, RegExp]> = [
  ['Network', '{"Network":"10.245.0.0/16","Backend":{"Type":"udp","Port":8285}}', /Network 10\.244\.0\.0\/16 -> 10\.245\.0\.0\/16/],
  ['SubnetLen', '{"Network":"10.244.0.0/16","SubnetLen":26,"Backend":{"Type":"udp","Port":8285}}', /SubnetLen 24 -> 26/],
  ['Backend.Port', '{"Network":"10.244.0.0/16","SubnetMin":"10.244.10.0","SubnetMax":"10.244.20.0","Backend":{"Type":"udp","Port":8472}}', /Backend\.Port 8285 -> 8472/],
  ['Backend.Type', '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}', /Backend\.Type changed from "udp".*"vxlan" is not supported/],
  ['SubnetMin/SubnetMax', '{"Network":"10.244.0.0/16","SubnetMin":"10.244.100.0","SubnetMax":"10.244.120.0","Backend":{"Type":"udp","Port":8285}}',
    /SubnetMin\/SubnetMax \[10\.244\.10\.0\.\.10\.244\.20\.0\] -> \[10\.244\.100\.0\.\.10\.244\.120\.0\], which no longer contains this node's subnet/],
];

t.test('config changes that matter: one fatal ConfigError naming the old and new values', async (t) => {
  const etcd = await startEtcd(t);
  for (const [what, text, re] of fatalCases) {
    await t.test(what, async (t) => {
      const x = await setup(t, {}, etcd);
      await x.admin.put(CONFIG).value(text);
      await waitFor('onFatal', () => x.fatals.length > 0, 5000);
      const err = x.fatals[0];
      t.ok(err instanceof ConfigError, 'a ConfigError');
      t.match(err?.message ?? '', re);
      t.match(err?.message ?? '', `etcd key ${CONFIG}`);
      await x.admin.put(CONFIG).value(BASE); // and back: still one
      await sleep(300);
      t.equal(x.fatals.length, 1, 'reported once');
      t.ok(x.logs.lines.some((l) => l['msg'] === 'network config changed' && l['level'] === 50), 'logged as an error');
      await x.s.close();
      await x.admin.delete().prefix(`${PREFIX}/subnets/`);
    });
  }
});

t.test('periodic re-list: counted, lastResync set, unchanged routes untouched', async (t) => {
  const etcd = await startEtcd(t);
  const admin = await etcd.admin();
  await admin.put(`${PREFIX}/subnets/10.244.77.0-24`).value(flannelLeaseValue('192.0.2.77'));
  const x = await setup(t, { resyncIntervalMs: 300 }, etcd);
  const calls = x.sink.calls.length;
  t.equal(calls, 1, 'the peer route');
  const t0 = Date.now();
  await waitFor('3 periodic re-lists', () => x.s.stats().resyncs >= 3, 15_000);
  const st = x.s.stats();
  t.ok((st.lastResyncAt?.getTime() ?? 0) >= t0, 'lastResyncAt set');
  t.equal(st.leader, true);
  t.equal(x.sink.calls.length, calls, 'no route removed or re-added');
  await admin.put(`${PREFIX}/subnets/10.244.78.0-24`).value(flannelLeaseValue('192.0.2.78'));
  await waitFor('a change still arrives', () => x.sink.table.get('10.244.78.0/24') === '192.0.2.78', 5000);
  t.same(x.fatals, []);
});
