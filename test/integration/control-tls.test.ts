/**
 * etcd with TLS client certificates (made by the test with openssl) and with password auth:
 * the right options connect, missing or wrong ones fail fast with an error that says why.
 */
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { EtcdRouteSource } from '../../src/control/etcd-source';
import { EtcdError } from '../../src/errors';
import type { EtcdOptions } from '../../src/control/etcd-client';
import { silentLogger } from '../../src/ops/log';
import { flannelLeaseValue, freePort, startEtcd } from '../helpers/etcd';

const PREFIX = '/coreos.com/network';

/** startTimeoutMs of the sources below: an error that is retried runs into it */
const START_TIMEOUT_MS = 60_000;

function source(etcd: EtcdOptions, publicIp = '192.0.2.1'): EtcdRouteSource {
  return new EtcdRouteSource({
    etcd,
    publicIp,
    subnetFile: path.join(os.tmpdir(), 'overlayd-no-such-dir', 'subnet.env'),
    leaseTtlSeconds: 60,
    logger: silentLogger(),
    startTimeoutMs: START_TIMEOUT_MS,
    callTimeoutMs: 3000,
  });
}

async function startError(s: EtcdRouteSource): Promise<{ err: unknown; ms: number }> {
  const t0 = Date.now();
  const err = await s.start().then(
    () => undefined,
    (e: unknown) => e,
  );
  await s.close();
  return { err, ms: Date.now() - t0 };
}

t.test('TLS with client certificates', async (t) => {
  const etcd = await startEtcd(t, { tls: true });
  const tls = etcd.tls;
  if (!tls) throw new Error('no TLS files');
  const admin = await etcd.admin();
  await admin.put(`${PREFIX}/config`).value('{"Network":"10.244.0.0/16"}');

  await t.test('with --etcd-cafile/--etcd-certfile/--etcd-keyfile: connects, leases', async (t) => {
    const s = source(etcd.etcdOptions(PREFIX));
    t.teardown(() => s.close());
    const r = await s.start();
    t.ok(r.lease.subnet);
    t.equal(await admin.get(s.leaseKey ?? '').string(), flannelLeaseValue('192.0.2.1'));
  });

  await t.test('without a client certificate: a clear EtcdError, not retried', async (t) => {
    const { err, ms } = await startError(source({ endpoints: etcd.endpoints, prefix: PREFIX, cafile: tls.caFile }));
    t.ok(err instanceof EtcdError, 'EtcdError');
    t.match((err as Error).message, /requires a client certificate/);
    t.match((err as Error).message, /--etcd-certfile and --etcd-keyfile/);
    t.ok(ms < START_TIMEOUT_MS, `failed at once, not after retrying for startTimeoutMs (${ms} ms)`);
  });

  await t.test('with no CA for the server certificate: says the certificate is not trusted', async (t) => {
    const { err, ms } = await startError(
      source({ endpoints: etcd.endpoints, prefix: PREFIX, cafile: tls.otherCaFile, certfile: tls.clientCert, keyfile: tls.clientKey }),
    );
    t.ok(err instanceof EtcdError);
    t.match((err as Error).message, /not trusted by --etcd-cafile/);
    t.ok(ms < START_TIMEOUT_MS, `failed at once, not after retrying for startTimeoutMs (${ms} ms)`);
  });

  await t.test('unreadable certificate file: a ConfigError naming the flag', async (t) => {
    const { err } = await startError(
      source({ endpoints: etcd.endpoints, prefix: PREFIX, cafile: tls.caFile, certfile: '/nonexistent/client.crt', keyfile: tls.clientKey }),
    );
    t.match(err, { code: 'ERR_CONFIG', message: /--etcd-certfile \/nonexistent\/client\.crt: cannot read it/ });
  });
});

t.test('password auth (--etcd-username/--etcd-password)', async (t) => {
  const etcd = await startEtcd(t);
  const admin = await etcd.admin();
  await admin.put(`${PREFIX}/config`).value('{"Network":"10.244.0.0/16"}');
  etcd.enableAuth('s3cret');

  await t.test('right credentials: connects', async (t) => {
    const s = source({ ...etcd.etcdOptions(PREFIX), username: 'root', password: 's3cret' });
    t.teardown(() => s.close());
    const r = await s.start();
    t.ok(r.lease.subnet);
  });

  await t.test('no credentials: says credentials are required', async (t) => {
    const { err, ms } = await startError(source(etcd.etcdOptions(PREFIX)));
    t.ok(err instanceof EtcdError);
    t.match((err as Error).message, /requires --etcd-username\/--etcd-password|refused the credentials/);
    t.ok(ms < START_TIMEOUT_MS, `failed at once, not after retrying for startTimeoutMs (${ms} ms)`);
  });

  await t.test('wrong password: says the credentials were refused', async (t) => {
    const { err } = await startError(source({ ...etcd.etcdOptions(PREFIX), username: 'root', password: 'wrong' }));
    t.ok(err instanceof EtcdError);
    t.match((err as Error).message, /refused the credentials of user root/);
  });
});

t.test('unreachable endpoints: start() retries for startTimeoutMs, then an EtcdError naming them', async (t) => {
  const port = await freePort(); // nothing listens there
  const s = new EtcdRouteSource({
    etcd: { endpoints: [`http://127.0.0.1:${port}`], prefix: PREFIX },
    publicIp: '192.0.2.1',
    subnetFile: path.join(os.tmpdir(), 'overlayd-no-such-dir', 'subnet.env'),
    leaseTtlSeconds: 60,
    logger: silentLogger(),
    startTimeoutMs: 1500,
    callTimeoutMs: 1000,
  });
  const { err, ms } = await startError(s);
  t.ok(err instanceof EtcdError);
  t.match((err as Error).message, `etcd at http://127.0.0.1:${port}`);
  t.match((err as Error).message, /reading the network config/);
  t.ok(ms >= 1400, `retried for startTimeoutMs (1500 ms), gave up after ${ms} ms`);
  t.ok(ms < START_TIMEOUT_MS, 'and then gave up');
});
