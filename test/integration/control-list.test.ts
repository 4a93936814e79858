/**
 * listPrefix (src/control/watch.ts) against a real etcd: pages of a few keys give every key
 * under the prefix exactly once, in key order, none outside it, all at the first page's
 * revision (a write between pages is not in the list).
 */
import t from 'tap';
import type { Etcd3 } from 'etcd3';
import { listPrefix } from '../../src/control/watch';
import { startEtcd } from '../helpers/etcd';

t.test('paged list: every key once, in order, at one revision', async (t) => {
  const etcd = await startEtcd(t);
  const admin = await etcd.admin();
  const names = Array.from({ length: 25 }, (_, i) => `/p/subnets/k${String(i).padStart(3, '0')}`);
  for (const k of names) await admin.put(k).value(`v-${k}`);
  await admin.put('/p/subnetsX').value('outside');
  await admin.put('/p/subnet').value('outside');
  await admin.put('/p/subnets0').value('outside');

  // a client whose second range request first writes a key that sorts last: it must not
  // show up (the pages after the first are read at the first page's revision)
  let ranges = 0;
  const client = Object.create(admin) as Etcd3;
  client.getAll = () => {
    const b = admin.getAll();
    const exec = b.exec.bind(b);
    if (++ranges === 2) b.exec = async () => {
      await admin.put('/p/subnets/zzz').value('late');
      return exec();
    };
    return b;
  };
  const seen: string[] = [];
  const rev = await listPrefix(client, '/p/subnets/', (e) => {
    seen.push(e.key);
    t.equal(e.value, `v-${e.key}`);
  }, 7);
  t.equal(ranges, 4, '25 keys in pages of 7: 4 requests');
  t.same(seen, names, 'every key, once, in order, none outside the prefix');
  const now = Number((await admin.get('/p/subnets/zzz').exec()).header.revision);
  t.ok(now > rev, `the late write (revision ${now}) came after the list's revision ${rev}`);
  t.equal(await admin.get('/p/subnets/zzz').string(), 'late');

  const again: string[] = [];
  await listPrefix(admin, '/p/subnets/', (e) => again.push(e.key), 5);
  t.same(again, [...names, '/p/subnets/zzz'], 'a new list sees it');
  const empty: string[] = [];
  t.ok((await listPrefix(admin, '/nothing/', (e) => empty.push(e.key), 3)) > 0, 'an empty range has a revision');
  t.same(empty, []);
});
