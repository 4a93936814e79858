/** RouteSync and diffRoutes with a recording fake sink: no etcd. */
import t from 'tap';
import { diffRoutes, RouteSync } from '../../src/control/route-sync';
import type { KvEntry } from '../../src/control/watch';
import type { Route, RouteSink } from '../../src/dataplane/types';
import { formatIp, formatPrefix, parseIp, parsePrefix, prefixKey, type Prefix } from '../../src/net/addr';
import { silentLogger } from '../../src/ops/log';

const P = (s: string): Prefix => {
  const p = parsePrefix(s);
  if (!p) throw new Error(s);
  return p;
};
const IP = (s: string): number => parseIp(s) ?? 0;
const PRE = '/coreos.com/network';
const key = (s: string) => `${PRE}/subnets/${s.replace('/', '-')}`;
let rev = 100;
const kv = (subnet: string, value: string): KvEntry => ({ key: key(subnet), value, modRevision: ++rev, createRevision: rev, lease: '0' });
const lease = (subnet: string, ip: string) => kv(subnet, `{"PublicIP":"${ip}","PublicIPv6":null}`);

class RecordingSink implements RouteSink {
  readonly calls: string[] = [];
  readonly table = new Map<string, number>();
  upsert(r: Route): void {
    this.calls.push(`+${formatPrefix(r.subnet)}>${formatIp(r.publicIp)}`);
    this.table.set(prefixKey(r.subnet), r.publicIp);
  }
  remove(s: Prefix): void {
    this.calls.push(`-${formatPrefix(s)}`);
    this.table.delete(prefixKey(s));
  }
}

function makeSync() {
  return new RouteSync({ prefix: PRE, network: P('10.244.0.0/16'), ownSubnet: P('10.244.1.0/24'), ownPublicIp: IP('192.0.2.1'), logger: silentLogger() });
}
const snap = (...es: KvEntry[]) => new Map(es.map((e) => [e.key, e]));

t.test('diffRoutes: only the difference', async (t) => {
  const r = (s: string, ip: string): [string, Route] => [s, { subnet: P(s), publicIp: IP(ip) }];
  const inForce = new Map([r('10.244.2.0/24', '192.0.2.2'), r('10.244.3.0/24', '192.0.2.3'), r('10.244.4.0/24', '192.0.2.4')]);
  const desired = new Map([r('10.244.2.0/24', '192.0.2.2'), r('10.244.3.0/24', '192.0.2.33'), r('10.244.5.0/24', '192.0.2.5')]);
  const d = diffRoutes(inForce, desired);
  t.same(d.removes.map(formatPrefix), ['10.244.4.0/24']);
  t.same(d.upserts.map((x) => formatPrefix(x.subnet)).sort(), ['10.244.3.0/24', '10.244.5.0/24']);
  t.same(diffRoutes(inForce, inForce), { upserts: [], removes: [] });
});

t.test('initial delivery excludes our own lease, bad values, outsiders', async (t) => {
  const s = makeSync();
  const sink = new RecordingSink();
  s.snapshot(
    snap(
      lease('10.244.1.0/24', '192.0.2.1'), // own
      lease('10.244.2.0/24', '192.0.2.2'),
      kv('10.244.3.0/24', '{"PublicIP":"10.0.0.3","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1}}'),
      kv('10.244.4.0/24', 'garbage'),
      lease('10.99.0.0/24', '192.0.2.9'), // outside the Network
      lease('10.244.6.0/24', '192.0.2.1'), // another subnet with our own IP
      { key: `${PRE}/subnets/not-a-subnet`, value: '{}', modRevision: 1, createRevision: 1, lease: '0' },
    ),
    200,
    true,
  );
  t.same(sink.calls, [], 'nothing before attach');
  s.attach(sink);
  t.same(sink.calls.sort(), ['+10.244.2.0/24>192.0.2.2', '+10.244.3.0/24>10.0.0.3']);
});

t.test('live events: upsert only on change, remove on delete', async (t) => {
  const s = makeSync();
  const sink = new RecordingSink();
  s.snapshot(snap(), 1, true);
  s.attach(sink);
  const a = lease('10.244.2.0/24', '192.0.2.2');
  s.put(a);
  s.put({ ...lease('10.244.2.0/24', '192.0.2.2') }); // same peer rewritten (e.g. renewed by flannel)
  s.put(lease('10.244.2.0/24', '192.0.2.22')); // peer changed
  s.put(kv('10.244.2.0/24', '{"PublicIP":')); // became malformed: no route any more
  s.put(lease('10.244.1.0/24', '192.0.2.1')); // own: ignored
  s.delete(key('10.244.9.0/24')); // unknown: ignored
  s.put(lease('10.244.3.0/24', '192.0.2.3'));
  s.delete(key('10.244.3.0/24'));
  t.same(sink.calls, ['+10.244.2.0/24>192.0.2.2', '+10.244.2.0/24>192.0.2.22', '-10.244.2.0/24', '+10.244.3.0/24>192.0.2.3', '-10.244.3.0/24']);
});

t.test('resync snapshot: only the difference reaches the sink, no flapping', async (t) => {
  const s = makeSync();
  const sink = new RecordingSink();
  const keep = lease('10.244.2.0/24', '192.0.2.2');
  const moved = lease('10.244.3.0/24', '192.0.2.3');
  const gone = lease('10.244.4.0/24', '192.0.2.4');
  s.snapshot(snap(keep, moved, gone), 10, true);
  s.attach(sink);
  sink.calls.length = 0;
  // while the watch was broken: 3 moved to another peer, 4 went away, 5 appeared, and 2
  // was rewritten with the same peer (new mod revision)
  s.snapshot(snap({ ...keep, modRevision: 50 }, lease('10.244.3.0/24', '192.0.2.33'), lease('10.244.5.0/24', '192.0.2.5')), 60, false);
  t.same(sink.calls.sort(), ['+10.244.3.0/24>192.0.2.33', '+10.244.5.0/24>192.0.2.5', '-10.244.4.0/24']);
  t.notOk(sink.calls.some((c) => c.includes('10.244.2.0')), 'unchanged route untouched');
  t.same(
    [...sink.table.entries()].map(([k, v]) => `${k}>${formatIp(v)}`).sort(),
    ['10.244.2.0/24>192.0.2.2', '10.244.3.0/24>192.0.2.33', '10.244.5.0/24>192.0.2.5'],
  );
  t.same(s.routes().length, 3);
  sink.calls.length = 0;
  s.snapshot(snap({ ...keep, modRevision: 50 }, lease('10.244.3.0/24', '192.0.2.33'), lease('10.244.5.0/24', '192.0.2.5')), 70, false);
  t.same(sink.calls, [], 'identical snapshot: no calls');
});

t.test('dual-stack keys name the same subnet: the newest wins, deleting one keeps the other', async (t) => {
  const s = makeSync();
  const sink = new RecordingSink();
  s.snapshot(snap(), 1, true);
  s.attach(sink);
  const plain = lease('10.244.7.0/24', '192.0.2.7');
  const dual: KvEntry = { ...lease('10.244.7.0/24', '192.0.2.77'), key: `${key('10.244.7.0/24')}&fd00:0:0:7::-64` };
  s.put(plain);
  s.put(dual);
  s.delete(dual.key);
  t.same(sink.calls, ['+10.244.7.0/24>192.0.2.7', '+10.244.7.0/24>192.0.2.77', '+10.244.7.0/24>192.0.2.7']);
});

t.test('a peer advertising partial checksums (BackendData) gets routes that say so; a change of it alone is re-upserted', async (t) => {
  const s = makeSync();
  const got: Route[] = [];
  const sink: RouteSink = { upsert: (r) => { got.push(r); }, remove: () => undefined };
  const adv = (subnet: string, ip: string) => kv(subnet, `{"PublicIP":"${ip}","PublicIPv6":null,"BackendData":{"PartialChecksums":true}}`);
  s.snapshot(snap(adv('10.244.2.0/24', '192.0.2.2'), lease('10.244.3.0/24', '192.0.2.3')), 1, true);
  s.attach(sink);
  const by = (sub: string) => got.filter((r) => formatPrefix(r.subnet) === sub);
  t.same(by('10.244.2.0/24').map((r) => r.partialChecksums), [true], 'the advertising peer');
  t.same(by('10.244.3.0/24').map((r) => r.partialChecksums), [undefined], 'a peer without BackendData (flannel\'s udp backend): full checksums');
  got.length = 0;
  s.put(adv('10.244.2.0/24', '192.0.2.2')); // rewritten, same advertisement
  t.same(got, [], 'same peer, same advertisement: no upsert');
  s.put(lease('10.244.2.0/24', '192.0.2.2')); // restarted without --partial-checksums
  t.same(got.map((r) => [formatPrefix(r.subnet), r.partialChecksums]), [['10.244.2.0/24', undefined]], 'advertisement withdrawn: upserted without it');
  got.length = 0;
  s.put(adv('10.244.3.0/24', '192.0.2.3'));
  t.same(got.map((r) => [formatPrefix(r.subnet), r.partialChecksums]), [['10.244.3.0/24', true]], 'advertisement added: upserted with it');
  t.same(diffRoutes(new Map([[1, { subnet: P('10.244.4.0/24'), publicIp: IP('192.0.2.4') }]]), new Map([[1, { subnet: P('10.244.4.0/24'), publicIp: IP('192.0.2.4'), partialChecksums: true as const }]])).upserts.length, 1, 'diffRoutes: a capability change is a difference');
});
