/**
 * Keeping this node's lease against a real etcd: renewal, re-acquisition after an operator
 * deletes the key or revokes the etcd lease, re-attachment, and the fatal error when
 * another node holds the subnet.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import t, { type Test } from 'tap';
import { EtcdRouteSource, type EtcdSourceOptions } from '../../src/control/etcd-source';
import { LeaseKeeper } from '../../src/control/lease';
import { LeaseError } from '../../src/errors';
import { formatPrefix } from '../../src/net/addr';
import { EtcdCluster, RecordingSink, flannelLeaseValue, memoryLogger, sleep, startEtcd, waitFor } from '../helpers/etcd';

const PREFIX = '/coreos.com/network';
const OWN_IP = '192.0.2.1';

function source(etcd: EtcdCluster, over: Partial<EtcdSourceOptions> = {}): EtcdRouteSource {
  return new EtcdRouteSource({
    etcd: etcd.etcdOptions(PREFIX),
    publicIp: OWN_IP,
    subnetFile: path.join(os.tmpdir(), 'overlayd-no-such-dir', 'subnet.env'),
    leaseTtlSeconds: 60,
    logger: memoryLogger('info').logger,
    startTimeoutMs: 10_000,
    resyncBackoff: { initialMs: 100, maxMs: 1000 },
    ...over,
  });
}

async function setup(t: Test, over: Partial<EtcdSourceOptions> = {}) {
  const etcd = await startEtcd(t);
  const admin = await etcd.admin();
  await admin.put(`${PREFIX}/config`).value('{"Network":"10.244.0.0/16"}');
  await admin.put(`${PREFIX}/subnets/10.244.250.0-24`).value(flannelLeaseValue('192.0.2.250')); // a peer
  const logs = memoryLogger('info');
  const s = source(etcd, { logger: logs.logger, ...over });
  t.teardown(() => s.close());
  const fatals: Error[] = [];
  s.onFatal((e) => fatals.push(e));
  const started = await s.start();
  const sink = new RecordingSink();
  await s.sync(sink);
  const key = s.leaseKey ?? '';
  return { etcd, admin, s, logs, fatals, sink, key, subnet: formatPrefix(started.lease.subnet) };
}

type Setup = Awaited<ReturnType<typeof setup>>;
const holder = async (x: Setup) => (await x.admin.get(x.key).exec()).kvs[0];

t.test('the etcd lease is kept alive well before its TTL runs out', async (t) => {
  const x = await setup(t, { leaseTtlSeconds: 2 }); // renewed every 2/3 s
  const id = x.s.etcdLeaseId;
  await sleep(5000);
  const kv = await holder(x);
  t.equal(kv?.value.toString(), flannelLeaseValue(OWN_IP), 'still there after 2.5 TTLs');
  t.equal(kv?.lease, id, 'on the same etcd lease');
  t.ok(x.logs.msgs().filter((m) => m === 'lease renewed').length >= 4, 'renewed repeatedly');
  t.equal(x.s.stats().leaseValid, true);
  t.ok((x.s.stats().leaseExpiresAt?.getTime() ?? 0) > Date.now());
  t.same(x.fatals, []);
});

t.test('lease key deleted by an operator: the same subnet is re-acquired, forwarding untouched', async (t) => {
  const x = await setup(t);
  const calls = x.sink.calls.length;
  const before = await holder(x);
  await x.admin.delete().key(x.key);
  const ms = await waitFor('the key to come back', async () => (await x.admin.get(x.key).string()) !== null, 3000, 10);
  const after = await holder(x);
  t.comment(`re-acquired in ${ms} ms`);
  t.equal(after?.value.toString(), flannelLeaseValue(OWN_IP), 'same subnet, our value');
  t.equal(after?.lease, before?.lease, 'on our (still alive) etcd lease');
  t.ok(Number(after?.create_revision) > Number(before?.create_revision), 're-created');
  t.equal(x.sink.calls.length, calls, 'no route touched');
  t.ok(x.logs.msgs().some((m) => m.startsWith('lease key disappeared')));
  t.ok(x.logs.msgs().some((m) => m.startsWith('subnet lease re-acquired (same subnet)')));
  t.same(x.fatals, []);
  await waitFor('stats: valid', () => x.s.stats().leaseValid, 1000);
});

t.test('etcd lease revoked by an operator: a new etcd lease, the same subnet', async (t) => {
  const x = await setup(t);
  const old = x.s.etcdLeaseId ?? '';
  await x.admin.leaseClient.leaseRevoke({ ID: old }); // deletes our key with it
  await waitFor('the key on a new etcd lease', async () => {
    const kv = await holder(x);
    return kv !== undefined && kv.lease !== old;
  }, 5000, 20);
  const kv = await holder(x);
  t.equal(kv?.value.toString(), flannelLeaseValue(OWN_IP));
  t.equal(kv?.lease, x.s.etcdLeaseId, 'the keeper renews the new lease');
  const ttl = await x.admin.leaseClient.leaseTimeToLive({ ID: kv?.lease ?? '0' });
  t.ok(Number(ttl.TTL) > 50, 'new lease has the full TTL');
  t.same(x.fatals, []);
});

t.test('key moved to another etcd lease (our PublicIP): re-attached to ours', async (t) => {
  const x = await setup(t);
  const other = String((await x.admin.leaseClient.leaseGrant({ TTL: 120, ID: 0 })).ID);
  await x.admin.put(x.key).value(flannelLeaseValue(OWN_IP)).lease(other);
  await waitFor('re-attachment', async () => (await holder(x))?.lease === x.s.etcdLeaseId, 3000, 20);
  t.not(x.s.etcdLeaseId, other);
  t.ok(x.logs.msgs().includes('lease key re-attached to our etcd lease'));
  t.same(x.fatals, []);
});

t.test('reservations (flannel: a key without TTL pins a subnet to a PublicIP) are kept as such', async (t) => {
  // a running node whose key an operator turns into a reservation: renewals stop
  const x = await setup(t, { renewIntervalMs: 200 });
  await x.admin.put(x.key).value(flannelLeaseValue(OWN_IP)); // etcdctl put: no lease
  await waitFor('reservation mode', () => x.logs.msgs().some((m) => m.startsWith('our lease key is now a reservation')), 3000);
  t.equal(x.s.etcdLeaseId, '0');
  t.equal(x.s.stats().leaseExpiresAt, undefined, 'never expires');
  t.equal(x.s.stats().leaseValid, true);
  const renewals = x.logs.msgs().filter((m) => m === 'lease renewed').length;
  await sleep(700);
  t.equal(x.logs.msgs().filter((m) => m === 'lease renewed').length, renewals, 'no renewal of a reservation');
  t.equal((await holder(x))?.lease, '0', 'left without TTL');

  // a node starting with a reservation for its PublicIP takes it, without TTL
  await x.admin.put(`${PREFIX}/subnets/10.244.200.0-24`).value(flannelLeaseValue('192.0.2.200'));
  const r = new EtcdRouteSource({
    etcd: x.etcd.etcdOptions(PREFIX),
    publicIp: '192.0.2.200',
    subnetFile: path.join(os.tmpdir(), 'overlayd-no-such-dir', 'subnet.env'),
    leaseTtlSeconds: 60,
    logger: memoryLogger('info').logger,
  });
  t.teardown(() => r.close());
  const got = await r.start();
  t.equal(formatPrefix(got.lease.subnet), '10.244.200.0/24');
  t.equal(got.lease.expiresAt, undefined);
  t.equal((await x.admin.get(`${PREFIX}/subnets/10.244.200.0-24`).exec()).kvs[0]?.lease, '0', 'still a reservation');

  // the operator removes the reservation: the node keeps its subnet with a normal lease
  await x.admin.delete().key(x.key);
  await waitFor('re-acquired with a TTL', async () => {
    const kv = await holder(x);
    return kv !== undefined && kv.lease !== '0';
  }, 3000, 20);
  t.equal((await holder(x))?.lease, x.s.etcdLeaseId);
  t.ok(x.s.stats().leaseExpiresAt, 'expires again');
  t.same(x.fatals, []);
});

t.test('subnet taken over by another node: onFatal with a LeaseError naming it', async (t) => {
  const x = await setup(t);
  await x.admin.put(x.key).value(flannelLeaseValue('192.0.2.200'));
  await waitFor('onFatal', () => x.fatals.length > 0, 3000);
  const err = x.fatals[0];
  t.ok(err instanceof LeaseError);
  t.match(err?.message ?? '', `subnet ${x.subnet} of this node (PublicIP ${OWN_IP}) is now held by node 192.0.2.200`);
  t.match(err?.message ?? '', x.key);
  await sleep(300);
  t.equal(x.fatals.length, 1, 'reported once');
  t.equal(await x.admin.get(x.key).string(), flannelLeaseValue('192.0.2.200'), 'the other node\'s lease is left alone');
  t.equal(x.s.stats().leaseValid, false);
});

t.test('our lease expires and another node takes the subnet before we notice: onFatal', async (t) => {
  const x = await setup(t);
  // revoke (= expiry) and immediately write the other node's lease: whichever of our
  // re-create and their write lands first, we end up seeing another node holding it
  await x.admin.leaseClient.leaseRevoke({ ID: x.s.etcdLeaseId ?? '' });
  await x.admin.put(x.key).value(flannelLeaseValue('192.0.2.201'));
  await waitFor('onFatal', () => x.fatals.length > 0, 5000);
  t.match(x.fatals[0]?.message ?? '', /now held by node 192\.0\.2\.201/);
});

t.test('close() keeps the lease in etcd (no revoke)', async (t) => {
  const x = await setup(t);
  const id = x.s.etcdLeaseId ?? '';
  await x.s.close();
  const ttl = await x.admin.leaseClient.leaseTimeToLive({ ID: id });
  t.ok(Number(ttl.TTL) > 50, 'etcd lease alive');
  t.equal(await x.admin.get(x.key).string(), flannelLeaseValue(OWN_IP));
});

t.test('keepalive finds the etcd lease gone (no watch involved): new lease, key re-created', async (t) => {
  const etcd = await startEtcd(t);
  const admin = await etcd.admin();
  const key = `${PREFIX}/subnets/10.244.3.0-24`;
  const old = String((await admin.leaseClient.leaseGrant({ TTL: 60, ID: 0 })).ID);
  await admin.put(key).value(flannelLeaseValue(OWN_IP)).lease(old);
  const logs = memoryLogger('info');
  const client = await etcd.client();
  const fatals: Error[] = [];
  const keeper = new LeaseKeeper({
    client,
    prefix: PREFIX,
    subnet: { addr: (10 << 24) | (244 << 16) | (3 << 8), len: 24 },
    publicIp: ((192 << 24) | (2 << 8) | 1) >>> 0,
    ttlSeconds: 60,
    leaseId: old,
    logger: logs.logger,
    onFatal: (e) => fatals.push(e),
    renewIntervalMs: 60_000,
  });
  t.teardown(() => keeper.close());
  await admin.leaseClient.leaseRevoke({ ID: old }); // the key goes with it
  await keeper.renew();
  await waitFor('the key back on a new lease', async () => {
    const kv = (await admin.get(key).exec()).kvs[0];
    return kv !== undefined && kv.lease === keeper.currentLeaseId && kv.lease !== old;
  }, 3000, 20);
  t.ok(logs.msgs().includes('etcd lease lost (expired or revoked); re-acquiring the subnet'));
  t.ok(logs.msgs().includes('subnet lease re-acquired (same subnet)'));
  t.equal(keeper.valid, true);
  t.same(fatals, []);
});
