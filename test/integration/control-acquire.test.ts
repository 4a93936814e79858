/**
 * Subnet lease acquisition against a real etcd: concurrency, reuse on restart, flannel's
 * exact value and subnet file, exhaustion, bad configs, waiting for the config.
 */
import { promises as fs, mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { EtcdRouteSource, type EtcdSourceOptions } from '../../src/control/etcd-source';
import { NetworkConfigError } from '../../src/control/network-config';
import { writeSubnetFile } from '../../src/control/subnet-file';
import { ConfigError, LeaseError } from '../../src/errors';
import { formatIp, formatPrefix } from '../../src/net/addr';
import type { Route } from '../../src/dataplane/types';
import { silentLogger } from '../../src/ops/log';
import { EtcdCluster, flannelLeaseValue, memoryLogger, startEtcd, waitFor } from '../helpers/etcd';

const PREFIX = '/coreos.com/network';
const SUBNETS = `${PREFIX}/subnets/`;

const tmp = mkdtempSync(path.join(os.tmpdir(), 'overlayd-acq-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

function source(etcd: EtcdCluster, over: Partial<EtcdSourceOptions> & { publicIp: string }, prefix = PREFIX): EtcdRouteSource {
  return new EtcdRouteSource({
    etcd: etcd.etcdOptions(prefix),
    subnetFile: path.join(tmp, 'absent', 'subnet.env'),
    leaseTtlSeconds: 60,
    logger: silentLogger(),
    startTimeoutMs: 10_000,
    ...over,
  });
}

/** every etcd lease id that exists */
async function leaseIds(etcd: EtcdCluster): Promise<string[]> {
  const c = await etcd.admin();
  return (await c.leaseClient.leaseLeases()).leases.map((l) => String(l.ID)).sort();
}

t.test('50 acquirers at once on a Network of 64 subnets: 50 distinct subnets, nothing overwritten', async (t) => {
  const etcd = await startEtcd(t);
  const admin = await etcd.admin();
  const prefix = '/race/network';
  // 10.244.0.0/18 with /24: 64 subnets; SubnetMin defaults to the second -> 63 leasable
  await admin.put(`${prefix}/config`).value('{"Network":"10.244.0.0/18","SubnetLen":24,"Backend":{"Type":"udp"}}');
  const logs = memoryLogger('info');
  const sources = Array.from({ length: 50 }, (_, i) =>
    source(etcd, { publicIp: `192.0.2.${i + 1}`, logger: logs.logger.child({ node: i }) }, prefix),
  );
  t.teardown(() => Promise.all(sources.map((s) => s.close())));
  const t0 = Date.now();
  const results = await Promise.all(sources.map((s) => s.start()));
  t.comment(`50 concurrent acquisitions took ${Date.now() - t0} ms; lost races retried: ${logs.msgs().filter((m) => m.startsWith('lost the race')).length}`);

  const subnets = results.map((r) => formatPrefix(r.lease.subnet));
  t.equal(new Set(subnets).size, 50, '50 distinct subnets');
  for (const s of subnets) t.match(s, /^10\.244\.([1-9]|[1-5]\d|6[0-3])\.0\/24$/, `${s} in [SubnetMin, SubnetMax]`);

  const listed = await admin.getAll().prefix(`${prefix}/subnets/`).exec();
  t.equal(listed.kvs.length, 50, '50 keys in etcd');
  const byKey = new Map(listed.kvs.map((kv) => [kv.key.toString(), kv]));
  for (const kv of listed.kvs) {
    t.equal(kv.version, '1', `${kv.key.toString()} written exactly once (never overwritten)`);
    t.equal(kv.create_revision, kv.mod_revision);
  }
  for (const [i, s] of sources.entries()) {
    const key = s.leaseKey ?? '';
    t.equal(key, `${prefix}/subnets/${subnets[i]?.replace('/', '-')}`, `node ${i} reports its key`);
    const kv = byKey.get(key);
    t.equal(kv?.value.toString(), flannelLeaseValue(`192.0.2.${i + 1}`), `node ${i} holds exactly the key it reports`);
    t.equal(kv?.lease, s.etcdLeaseId, `node ${i}'s key is on node ${i}'s etcd lease`);
    t.equal(formatIp(results[i]?.lease.publicIp ?? 0), `192.0.2.${i + 1}`);
  }
});

t.test('own lease value and subnet file are flannel\'s, byte for byte', async (t) => {
  const etcd = await startEtcd(t);
  const admin = await etcd.admin();
  await admin.put(`${PREFIX}/config`).value('{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":8285}}');
  const s = source(etcd, { publicIp: '192.0.2.7' });
  t.teardown(() => s.close());
  const { config, lease } = await s.start();
  const key = `${SUBNETS}${formatPrefix(lease.subnet).replace('/', '-')}`;
  t.equal(s.leaseKey, key);
  const kv = (await admin.get(key).exec()).kvs[0];
  t.equal(kv?.value.toString(), '{"PublicIP":"192.0.2.7","PublicIPv6":null}');
  t.not(kv?.lease, '0', 'attached to an etcd lease');
  const ttl = await admin.leaseClient.leaseTimeToLive({ ID: kv?.lease ?? '0' });
  t.ok(Number(ttl.grantedTTL) === 60, 'etcd lease TTL is --subnet-lease-ttl');
  t.ok(lease.expiresAt && lease.expiresAt.getTime() > Date.now() + 50_000);

  const file = path.join(tmp, 'flannel-form', 'subnet.env');
  await writeSubnetFile(file, { network: config.network, subnet: lease.subnet, mtu: 1472, ipMasq: false });
  const third = formatPrefix(lease.subnet).split('.')[2];
  t.equal(
    await fs.readFile(file, 'utf8'),
    `FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.${third}.1/24\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n`,
  );
  t.same(await fs.readdir(path.dirname(file)), ['subnet.env']);
});

t.test('restart: same subnet by PublicIP, then by the subnet file when the PublicIP changed', async (t) => {
  const etcd = await startEtcd(t);
  const admin = await etcd.admin();
  await admin.put(`${PREFIX}/config`).value('{"Network":"10.244.0.0/16"}');
  const file = path.join(tmp, 'restart', 'subnet.env');

  // first life
  const a = source(etcd, { publicIp: '192.0.2.10', subnetFile: file, leaseTtlSeconds: 2 });
  const first = await a.start();
  const key = a.leaseKey ?? '';
  const firstLease = a.etcdLeaseId ?? '';
  const before = (await admin.get(key).exec()).kvs[0];
  await writeSubnetFile(file, { network: first.config.network, subnet: first.lease.subnet, mtu: 1472, ipMasq: false });
  await a.close();
  t.equal(await admin.get(key).string(), flannelLeaseValue('192.0.2.10'), 'close() keeps the lease');

  // second life, same PublicIP: the lease is reused and moved to a fresh etcd lease
  const b = source(etcd, { publicIp: '192.0.2.10', subnetFile: file, leaseTtlSeconds: 2 });
  const second = await b.start();
  t.equal(formatPrefix(second.lease.subnet), formatPrefix(first.lease.subnet), 'same subnet by PublicIP');
  t.equal(b.acquiredHow, 'reused');
  const after = (await admin.get(key).exec()).kvs[0];
  t.equal(after?.create_revision, before?.create_revision, 'same key, not re-created');
  t.not(after?.lease, firstLease, 'attached to a fresh etcd lease');
  t.equal(after?.lease, b.etcdLeaseId);
  const old = await admin.leaseClient.leaseTimeToLive({ ID: firstLease });
  t.ok(Number(old.TTL) <= 0, 'the old, now keyless, etcd lease was revoked');
  await b.close();

  // the node goes away for longer than the TTL: its lease expires
  await waitFor('the lease to expire', async () => (await admin.get(key).string()) === null, 8000, 100);

  // third life with another PublicIP: the subnet file's subnet is free again -> reused
  const c = source(etcd, { publicIp: '192.0.2.99', subnetFile: file, leaseTtlSeconds: 60 });
  t.teardown(() => c.close());
  const third = await c.start();
  t.equal(formatPrefix(third.lease.subnet), formatPrefix(first.lease.subnet), 'same subnet by the subnet file');
  t.equal(c.acquiredHow, 'subnet-file');
  t.equal(await admin.get(key).string(), flannelLeaseValue('192.0.2.99'));

  // a fourth node with that same subnet file (copied) cannot take the held subnet
  const d = source(etcd, { publicIp: '192.0.2.100', subnetFile: file });
  t.teardown(() => d.close());
  const fourth = await d.start();
  t.not(formatPrefix(fourth.lease.subnet), formatPrefix(first.lease.subnet), 'a held subnet is never taken from the subnet file');
  t.equal(d.acquiredHow, 'random');
  t.equal(await admin.get(key).string(), flannelLeaseValue('192.0.2.99'), 'holder untouched');
});

t.test('a lease flannel wrote for this PublicIP (another backend) is reused and rewritten in udp form', async (t) => {
  const etcd = await startEtcd(t);
  const admin = await etcd.admin();
  await admin.put(`${PREFIX}/config`).value('{"Network":"10.244.0.0/16"}');
  const key = `${SUBNETS}10.244.42.0-24`;
  await admin.put(key).value('{"PublicIP":"192.0.2.42","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1}}');
  const s = source(etcd, { publicIp: '192.0.2.42' });
  t.teardown(() => s.close());
  const r = await s.start();
  t.equal(formatPrefix(r.lease.subnet), '10.244.42.0/24');
  t.equal(await admin.get(key).string(), flannelLeaseValue('192.0.2.42'));
});

t.test('an exhausted Network is a LeaseError; nothing is written', async (t) => {
  const etcd = await startEtcd(t);
  const admin = await etcd.admin();
  await admin.put(`${PREFIX}/config`).value('{"Network":"10.244.0.0/22","SubnetLen":24}');
  const holders = [1, 2, 3].map((i) => source(etcd, { publicIp: `192.0.2.${i}` }));
  t.teardown(() => Promise.all(holders.map((h) => h.close())));
  for (const h of holders) await h.start(); // 3 leasable subnets: .1 .2 .3
  const keysBefore = await etcd.dump('/');
  const leasesBefore = await leaseIds(etcd);
  const late = source(etcd, { publicIp: '192.0.2.4' });
  t.teardown(() => late.close());
  const err = await late.start().then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof LeaseError, 'LeaseError');
  t.match((err as Error).message, /no free subnet in Network 10\.244\.0\.0\/22: all 3 subnets of length \/24 between SubnetMin 10\.244\.1\.0 and SubnetMax 10\.244\.3\.0/);
  t.same(await etcd.dump('/'), keysBefore, 'no key written');
  t.same(await leaseIds(etcd), leasesBefore, 'no etcd lease left behind');
});

t.test('each bad network config: the named ConfigError, nothing written to etcd', async (t) => {
  const etcd = await startEtcd(t);
  const admin = await etcd.admin();
  const cases: Array<[string, string, string]> = [
    ['invalid JSON', '{"Network": "10.244.0.0/16",', ''],
    ['Network not a CIDR', '{"Network":"10.244.0.0"}', 'Network'],
    ['Network missing', '{"SubnetLen":24}', 'Network'],
    ['SubnetLen > 30', '{"Network":"10.244.0.0/16","SubnetLen":31}', 'SubnetLen'],
    ['SubnetLen <= Network prefix', '{"Network":"10.244.0.0/16","SubnetLen":16}', 'SubnetLen'],
    ['SubnetMin outside', '{"Network":"10.244.0.0/16","SubnetMin":"10.0.0.0"}', 'SubnetMin'],
    ['SubnetMin not aligned', '{"Network":"10.244.0.0/16","SubnetMin":"10.244.1.7"}', 'SubnetMin'],
    ['SubnetMax outside', '{"Network":"10.244.0.0/16","SubnetMax":"10.245.0.0"}', 'SubnetMax'],
    ['SubnetMax not aligned', '{"Network":"10.244.0.0/16","SubnetMax":"10.244.7.128"}', 'SubnetMax'],
    ['Backend.Type vxlan', '{"Network":"10.244.0.0/16","Backend":{"Type":"vxlan"}}', 'Backend.Type'],
    ['Backend.Port 0', '{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":0}}', 'Backend.Port'],
    ['Backend.Port 70000', '{"Network":"10.244.0.0/16","Backend":{"Port":70000}}', 'Backend.Port'],
  ];
  for (const [name, text, field] of cases) {
    const prefix = `/bad/${name.replace(/[^a-zA-Z0-9]+/g, '-')}`;
    await admin.put(`${prefix}/config`).value(text);
    const before = await etcd.dump('/');
    const leasesBefore = await leaseIds(etcd);
    const s = source(etcd, { publicIp: '192.0.2.1' }, prefix);
    const err = await s.start().then(
      () => undefined,
      (e: unknown) => e,
    );
    await s.close();
    t.ok(err instanceof ConfigError && err instanceof NetworkConfigError, `${name}: ConfigError`);
    if (err instanceof NetworkConfigError) {
      t.equal(err.field, field, `${name}: names the field`);
      t.match(err.message, `${prefix}/config`, `${name}: names the key`);
    }
    t.same(await etcd.dump('/'), before, `${name}: nothing written`);
    t.same(await leaseIds(etcd), leasesBefore, `${name}: no etcd lease granted`);
  }
});

t.test('missing config: warns once, waits, goes on when it appears', async (t) => {
  const etcd = await startEtcd(t);
  const admin = await etcd.admin();
  const logs = memoryLogger('info');
  const s = source(etcd, { publicIp: '192.0.2.5', logger: logs.logger, configPollMaxMs: 300 });
  t.teardown(() => s.close());
  let done = false;
  const started = s.start().finally(() => (done = true));
  await waitFor('the "config missing" warning', () => logs.msgs().some((m) => m.includes('network config not found')), 5000);
  await new Promise((r) => setTimeout(r, 1500));
  t.notOk(done, 'still waiting');
  t.same(await etcd.dump('/'), {}, 'nothing written while waiting');
  await admin.put(`${PREFIX}/config`).value('{"Network":"10.244.0.0/16"}');
  const r = await started;
  t.ok(r.lease.subnet, 'lease acquired after the config appeared');
  t.equal(logs.msgs().filter((m) => m.includes('network config not found')).length, 1, 'the wait is logged once');
});

t.test('close() while waiting for the config ends start() promptly', async (t) => {
  const etcd = await startEtcd(t);
  const s = source(etcd, { publicIp: '192.0.2.6' });
  const started = s.start().then(
    () => undefined,
    (e: unknown) => e,
  );
  await new Promise((r) => setTimeout(r, 300));
  const t0 = Date.now();
  await s.close();
  const err = await started;
  t.ok(err instanceof Error, 'start() rejected');
  // ended by close(), not by running out its startTimeoutMs (that would be another error)
  t.match(err, { message: /closed during start-up/ }, 'because of close()');
  t.comment(`start() ended ${Date.now() - t0} ms after close()`);
});

t.test('--partial-checksums: BackendData in our value, seen by a peer; a restart without it rewrites the value flannel\'s way', async (t) => {
  const etcd = await startEtcd(t);
  const admin = await etcd.admin();
  await admin.put(`${PREFIX}/config`).value('{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":8285}}');
  const a = source(etcd, { publicIp: '192.0.2.7', partialChecksums: true });
  const first = await a.start();
  const key = `${SUBNETS}${formatPrefix(first.lease.subnet).replace('/', '-')}`;
  t.equal(await admin.get(key).string(), '{"PublicIP":"192.0.2.7","PublicIPv6":null,"BackendData":{"PartialChecksums":true}}');
  // a peer reads the advertisement into its route
  const b = source(etcd, { publicIp: '192.0.2.8' });
  t.teardown(() => b.close());
  await b.start();
  const routes: Route[] = [];
  await b.sync({ upsert: (r) => { routes.push(r); }, remove: () => undefined });
  t.same(routes.map((r) => [formatPrefix(r.subnet), formatIp(r.publicIp), r.partialChecksums]), [[formatPrefix(first.lease.subnet), '192.0.2.7', true]]);
  await a.close();
  // restarted without the flag: the same subnet (by PublicIP), the value without BackendData
  const again = source(etcd, { publicIp: '192.0.2.7' });
  t.teardown(() => again.close());
  const second = await again.start();
  t.equal(formatPrefix(second.lease.subnet), formatPrefix(first.lease.subnet), 'same subnet');
  t.equal(await admin.get(key).string(), flannelLeaseValue('192.0.2.7'), 'flannel\'s udp value again');
  // the peer's watch turns its route into a full-checksum one (polled, bounded)
  for (let i = 0; i < 100 && routes.at(-1)?.partialChecksums === true; i++) await new Promise((r) => setTimeout(r, 100));
  t.same(routes.at(-1) && [formatIp(routes.at(-1)?.publicIp ?? 0), routes.at(-1)?.partialChecksums], ['192.0.2.7', undefined], 'the peer upserted the route without it');
});
