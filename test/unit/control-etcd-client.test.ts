/** etcd client options, error explanations and backoff: pure logic, no etcd. */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { GRPCUnavailableError, EtcdAuthenticationFailedError } from 'etcd3';
import { Backoff, Stopper, withTimeout } from '../../src/control/backoff';
import { etcd3Options, etcdErrorText, explainEtcdError, isTransientEtcdError, normalizeEndpoints } from '../../src/control/etcd-client';
import { ConfigError, EtcdError } from '../../src/errors';

t.test('endpoints like flanneld\'s --etcd-endpoints', async (t) => {
  t.same(normalizeEndpoints(['http://127.0.0.1:2379'], false), { hosts: ['http://127.0.0.1:2379'], secure: false });
  t.same(normalizeEndpoints([' https://10.0.0.1:2379/ ', 'https://10.0.0.2:2379'], true), {
    hosts: ['https://10.0.0.1:2379', 'https://10.0.0.2:2379'],
    secure: true,
  });
  t.same(normalizeEndpoints(['10.0.0.1'], false).hosts, ['http://10.0.0.1:2379'], 'no scheme, no port: http, 2379');
  t.same(normalizeEndpoints(['10.0.0.1:4001'], true).hosts, ['https://10.0.0.1:4001'], 'no scheme with TLS files: https');
  t.same(normalizeEndpoints(['http://[::1]:2379'], false).hosts, ['http://[::1]:2379']);
  t.throws(() => normalizeEndpoints([], false), ConfigError);
  t.throws(() => normalizeEndpoints(['http://a:1', 'https://b:2'], false), { message: /same scheme/ });
  t.throws(() => normalizeEndpoints(['unix:///run/etcd.sock'], false), ConfigError);
  t.throws(() => normalizeEndpoints(['http://a:99999'], false), { message: /bad port/ });
});

t.test('etcd3 options: TLS only over https, files read, flags paired', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'overlayd-ec-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const f = (n: string) => {
    writeFileSync(path.join(dir, n), `-----${n}-----\n`);
    return path.join(dir, n);
  };
  const o = await etcd3Options({ endpoints: ['https://127.0.0.1:2379'], prefix: '/p', cafile: f('ca'), certfile: f('crt'), keyfile: f('key'), username: 'u', password: 'p' });
  t.equal(o.credentials?.rootCertificate.toString(), '-----ca-----\n');
  t.equal(o.credentials?.certChain?.toString(), '-----crt-----\n');
  t.equal(o.credentials?.privateKey?.toString(), '-----key-----\n');
  t.same(o.auth, { username: 'u', password: 'p' });
  const plain = await etcd3Options({ endpoints: ['http://127.0.0.1:2379'], prefix: '/p' });
  t.equal(plain.credentials, undefined);
  const sys = await etcd3Options({ endpoints: ['https://127.0.0.1:2379'], prefix: '/p' });
  t.ok((sys.credentials?.rootCertificate.length ?? 0) > 1000, 'https without --etcd-cafile: the system roots');
  await t.rejects(etcd3Options({ endpoints: ['http://x:1'], prefix: '/p', cafile: f('ca') }), { message: /use https/ });
  await t.rejects(etcd3Options({ endpoints: ['https://x:1'], prefix: '/p', certfile: f('crt') }), { message: /given together/ });
  await t.rejects(etcd3Options({ endpoints: ['http://x:1'], prefix: '/p', username: 'u' }), { message: /given together/ });
  await t.rejects(etcd3Options({ endpoints: ['https://x:1'], prefix: '/p', cafile: '/nonexistent/ca.crt' }), {
    message: /--etcd-cafile \/nonexistent\/ca\.crt: cannot read it/,
  });
});

t.test('errors: transient or not, explained in flag terms', async (t) => {
  const opts = { endpoints: ['https://127.0.0.1:2379'], prefix: '/p' };
  const unavailable = new GRPCUnavailableError('14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:2379 (2026-01-01T00:00:00.000Z). Resolution note: ');
  t.ok(isTransientEtcdError(unavailable));
  t.equal(etcdErrorText(unavailable), '14 UNAVAILABLE: No connection established. Last error: Error: connect ECONNREFUSED 127.0.0.1:2379');
  const noCert = new GRPCUnavailableError('14 UNAVAILABLE: No connection established. Last error: ...:SSL routines:ssl3_read_bytes:sslv3 alert bad certificate:...:SSL alert number 42');
  t.notOk(isTransientEtcdError(noCert), 'TLS refusal is not transient');
  const e1 = explainEtcdError(noCert, opts, 'reading the network config');
  t.ok(e1 instanceof EtcdError);
  t.match(e1.message, /^reading the network config: etcd at https:\/\/127\.0\.0\.1:2379 refused the TLS connection: it requires a client certificate/);
  const untrusted = new GRPCUnavailableError('14 UNAVAILABLE: No connection established. Last error: Error: unable to verify the first certificate.');
  t.match(explainEtcdError(untrusted, opts, 'x').message, /not trusted \(pass --etcd-cafile\)/);
  const auth = new EtcdAuthenticationFailedError('etcdserver: authentication failed, invalid user ID or password');
  t.notOk(isTransientEtcdError(auth));
  t.match(explainEtcdError(auth, { ...opts, username: 'bob' }, 'x').message, /refused the credentials of user bob/);
  t.ok(isTransientEtcdError(new Error('etcdserver: request timed out')));
  t.ok(isTransientEtcdError(new Error('etcdserver: leader changed')));
  t.notOk(isTransientEtcdError('a string'));
  const ours = new EtcdError('already explained');
  t.equal(explainEtcdError(ours, opts, 'x'), ours);
});

t.test('backoff: grows, is bounded, resets', async (t) => {
  const b = new Backoff({ initialMs: 100, maxMs: 1000, jitter: 0 });
  t.same([b.next(), b.next(), b.next(), b.next(), b.next(), b.next()], [100, 200, 400, 800, 1000, 1000]);
  b.reset();
  t.equal(b.next(), 100);
  const j = new Backoff({ initialMs: 1000, maxMs: 1000, jitter: 0.2 }, () => 0);
  t.equal(j.next(), 800, 'jitter stays within +-20%');
  for (let i = 0; i < 100; i++) t.ok(new Backoff({ initialMs: 10, maxMs: 50 }).next() <= 50);
});

t.test('stopper: sleeps end early on stop; withTimeout', async (t) => {
  const s = new Stopper();
  const t0 = Date.now();
  const p = s.sleep(10_000);
  setTimeout(() => s.stop(), 20);
  t.equal(await p, false);
  t.ok(Date.now() - t0 < 1000);
  t.equal(await s.sleep(10), false, 'already stopped');
  t.equal(await new Stopper().sleep(5), true);
  await t.rejects(withTimeout(new Promise(() => undefined), 20, () => new Error('late')), { message: 'late' });
  t.equal(await withTimeout(Promise.resolve(7), 20, () => new Error('late')), 7);
});
