/**
 * Dual-stack control plane against a real etcd (one member for the file, one prefix per
 * test): flannel's key `10.244.3.0-24&fd00:10:244:3::-64` and value with PublicIPv6, picking
 * both subnets together, reuse of both on restart (by PublicIP, then the subnet file), mixed
 * leases (IPv4-only peers, flannel-written values), an IPv4-only lease of ours in a network
 * that turned dual-stack, the keeper restoring the dual-stack key, config errors and a fatal
 * IPv6Network change. Route sinks record; no engine.
 */
import { promises as fs, mkdtempSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import t from 'tap';
import { EtcdRouteSource, type EtcdSourceOptions } from '../../src/control/etcd-source';
import { NetworkConfigError } from '../../src/control/network-config';
import { formatSubnetFile, readSubnetFile } from '../../src/control/subnet-file';
import type { Route6 } from '../../src/dataplane/types';
import { ConfigError } from '../../src/errors';
import { formatIp, formatPrefix } from '../../src/net/addr';
import { formatIp6, formatPrefix6, type Prefix6 } from '../../src/net/addr6';
import { RecordingSink, flannelLeaseValue, memoryLogger, startEtcd, waitFor, type EtcdCluster } from '../helpers/etcd';

const tmp = mkdtempSync(path.join(os.tmpdir(), 'overlayd-dual-'));
t.teardown(() => rmSync(tmp, { recursive: true, force: true }));

const DUAL = (extra: Record<string, unknown> = {}) =>
  JSON.stringify({ Network: '10.244.0.0/16', EnableIPv6: true, IPv6Network: 'fd00:10:244::/56', Backend: { Type: 'udp', Port: 8285 }, ...extra });
/** flannel's dual-stack key name pattern for this Network/IPv6Network */
const DUAL_KEY = /^10\.244\.(\d{1,3})\.0-24&fd00:10:244:([0-9a-f]{1,2})::-64$/;

/** RecordingSink plus the IPv6 routes: "subnet6>publicIp|publicIpv6-or-v4". */
class DualSink extends RecordingSink {
  readonly table6 = new Map<string, string>();
  upsert6(r: Route6): void {
    this.table6.set(formatPrefix6(r.subnet), `${formatIp(r.publicIp)}|${r.publicIpv6 === undefined ? 'v4' : formatIp6(r.publicIpv6)}`);
  }
  remove6(s: Prefix6): void {
    this.table6.delete(formatPrefix6(s));
  }
  snapshot6(): string[] {
    return [...this.table6].map(([s, v]) => `${s}>${v}`).sort();
  }
}

let etcdShared: EtcdCluster | undefined;
async function etcd(): Promise<EtcdCluster> {
  etcdShared ??= await startEtcd(t);
  return etcdShared;
}

let n = 0;
async function setup(config: string): Promise<{ prefix: string; admin: Awaited<ReturnType<EtcdCluster['admin']>>; dir: string }> {
  const prefix = `/dual${++n}/network`;
  const e = await etcd();
  const admin = await e.admin();
  await admin.put(`${prefix}/config`).value(config);
  const dir = path.join(tmp, `t${n}`);
  return { prefix, admin, dir };
}

function source(prefix: string, over: Partial<EtcdSourceOptions> & { publicIp: string }): EtcdRouteSource {
  if (!etcdShared) throw new Error('etcd not started');
  return new EtcdRouteSource({
    etcd: etcdShared.etcdOptions(prefix),
    subnetFile: path.join(tmp, 'absent', 'subnet.env'),
    leaseTtlSeconds: 60,
    logger: memoryLogger('info').logger,
    startTimeoutMs: 10_000,
    ...over,
  });
}

t.test('dual-stack acquire: flannel\'s key and value; restart reuses both (by PublicIP, then the subnet file)', async (t) => {
  const { prefix, admin, dir } = await setup(DUAL());
  const subnetFile = path.join(dir, 'subnet.env');
  const s1 = source(prefix, { publicIp: '192.0.2.7', publicIpv6: '2001:db8::7', subnetFile });
  t.teardown(() => s1.close());
  const r1 = await s1.start();
  t.equal(s1.acquiredHow, 'random');
  const listed = await admin.getAll().prefix(`${prefix}/subnets/`).exec();
  t.equal(listed.kvs.length, 1);
  const key = listed.kvs[0]?.key.toString() ?? '';
  const name = key.slice(`${prefix}/subnets/`.length);
  const m = DUAL_KEY.exec(name);
  t.ok(m, `key ${name} is flannel's dual-stack key`);
  t.equal(key, s1.leaseKey);
  t.equal(listed.kvs[0]?.value.toString(), '{"PublicIP":"192.0.2.7","PublicIPv6":"2001:db8::7"}', 'value: json.Marshal of LeaseAttrs');
  const subnet6 = r1.lease.subnet6;
  t.ok(subnet6, 'the lease has an IPv6 subnet');
  t.equal(formatPrefix(r1.lease.subnet), `10.244.${m?.[1]}.0/24`);
  t.equal(subnet6 && formatPrefix6(subnet6), `fd00:10:244:${m?.[2]}::/64`, 'the key names the lease\'s IPv6 subnet');
  t.equal(r1.lease.publicIpv6 !== undefined ? formatIp6(r1.lease.publicIpv6) : '', '2001:db8::7');
  t.equal(r1.config.ipv6?.subnetLen, 64);

  // what the daemon writes: flannel's WriteSubnetFile (FLANNEL_IPV6_* after FLANNEL_SUBNET)
  await fs.mkdir(dir, { recursive: true });
  if (!subnet6 || !r1.config.ipv6) throw new Error('no IPv6 part');
  await fs.writeFile(subnetFile, formatSubnetFile({ network: r1.config.network, subnet: r1.lease.subnet, mtu: 1472, ipMasq: false, ipv6: { network: r1.config.ipv6.network, subnet: subnet6 } }));
  t.equal(
    await fs.readFile(subnetFile, 'utf8'),
    `FLANNEL_NETWORK=10.244.0.0/16\nFLANNEL_SUBNET=10.244.${m?.[1]}.1/24\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\n` +
      `FLANNEL_IPV6_SUBNET=fd00:10:244:${m?.[2]}::1/64\nFLANNEL_MTU=1472\nFLANNEL_IPMASQ=false\n`,
  );
  await s1.close();

  // restart: the lease held by our PublicIP, both parts
  const s2 = source(prefix, { publicIp: '192.0.2.7', publicIpv6: '2001:db8::7', subnetFile });
  t.teardown(() => s2.close());
  const r2 = await s2.start();
  t.equal(s2.acquiredHow, 'reused');
  t.equal(s2.leaseKey, key, 'same key');
  t.same(r2.lease.subnet6, subnet6);
  await s2.close();

  // the key is gone (expired): the subnet file's two subnets are taken again
  await admin.delete().key(key);
  const s3 = source(prefix, { publicIp: '192.0.2.7', publicIpv6: '2001:db8::7', subnetFile });
  t.teardown(() => s3.close());
  const r3 = await s3.start();
  t.equal(s3.acquiredHow, 'subnet-file');
  t.equal(s3.leaseKey, key, 'same key from FLANNEL_SUBNET and FLANNEL_IPV6_SUBNET');
  t.same(r3.lease.subnet6, subnet6);
  t.same((await readSubnetFile(subnetFile))?.ipv6?.subnet, subnet6);
  await s3.close();

  // a node without --public-ipv6: PublicIPv6 null, still a dual-stack key
  const s4 = source(prefix, { publicIp: '192.0.2.8' });
  t.teardown(() => s4.close());
  const r4 = await s4.start();
  t.match(s4.leaseKey ?? '', /&fd00:10:244:[0-9a-f]+::-64$/);
  t.notSame(r4.lease.subnet6, subnet6, 'another IPv6 subnet');
  t.equal((await admin.get(s4.leaseKey ?? '').string()), flannelLeaseValue('192.0.2.8'));
  t.equal(r4.lease.publicIpv6, undefined);
  await s4.close();
});

t.test('both subnets picked free together; mixed leases give IPv4 and IPv6 routes by the underlay rule', async (t) => {
  // /124 in /126s: IPv6SubnetMin fd00::4, IPv6SubnetMax fd00::c: three IPv6 subnets
  const { prefix, admin } = await setup(DUAL({ IPv6Network: 'fd00::/124' }));
  const sub = `${prefix}/subnets/`;
  // a flannel vxlan node (dual-stack value), a dual-stack node without PublicIPv6, an old IPv4-only node
  await admin.put(`${sub}10.244.51.0-24&fd00::4-126`).value(
    '{"PublicIP":"192.0.2.51","PublicIPv6":"2001:db8::51","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:ff"},"BackendV6Data":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:00"}}',
  );
  await admin.put(`${sub}10.244.52.0-24&fd00::8-126`).value(flannelLeaseValue('192.0.2.52'));
  await admin.put(`${sub}10.244.53.0-24`).value(flannelLeaseValue('192.0.2.53'));
  const s = source(prefix, { publicIp: '192.0.2.1', publicIpv6: '2001:db8::1' });
  t.teardown(() => s.close());
  const r = await s.start();
  t.equal(r.lease.subnet6 && formatPrefix6(r.lease.subnet6), 'fd00::c/126', 'the one free IPv6 subnet');
  t.notOk(['10.244.51.0/24', '10.244.52.0/24', '10.244.53.0/24'].includes(formatPrefix(r.lease.subnet)), 'a free IPv4 subnet');
  t.match(s.leaseKey ?? '', /\/subnets\/10\.244\.\d+\.0-24&fd00::c-126$/);
  const sink = new DualSink();
  await s.sync(sink);
  t.same(sink.snapshot(), ['10.244.51.0/24>192.0.2.51', '10.244.52.0/24>192.0.2.52', '10.244.53.0/24>192.0.2.53'], 'every peer keeps its IPv4 route');
  t.same(sink.snapshot6(), ['fd00::4/126>192.0.2.51|2001:db8::51', 'fd00::8/126>192.0.2.52|v4'], 'IPv6 underlay only where both ends have a PublicIPv6');
  t.same(s.routes6(), [
    { subnet: 'fd00::4/126', publicIp: '192.0.2.51', publicIpv6: '2001:db8::51' },
    { subnet: 'fd00::8/126', publicIp: '192.0.2.52' },
  ].sort((a, b) => (a.subnet < b.subnet ? -1 : 1)));

  // the IPv4-only node comes back dual-stack; the dual-stack one without PublicIPv6 gets one
  await admin.delete().key(`${sub}10.244.52.0-24&fd00::8-126`);
  await waitFor('IPv6 route gone', () => !sink.table6.has('fd00::8/126'), 5000);
  await admin.put(`${sub}10.244.53.0-24&fd00::8-126`).value('{"PublicIP":"192.0.2.53","PublicIPv6":"2001:db8::53"}');
  await waitFor('IPv6 route of the re-leased node', () => sink.table6.get('fd00::8/126') === '192.0.2.53|2001:db8::53', 5000);
  t.equal(sink.table.get('10.244.53.0/24'), '192.0.2.53');

  // IPv6Network exhausted: a fourth dual-stack node fails with a clear LeaseError
  const s5 = source(prefix, { publicIp: '192.0.2.5' });
  t.teardown(() => s5.close());
  await t.rejects(s5.start(), { message: /no free IPv6 subnet in IPv6Network fd00::\/124: all 3 subnets of length \/126/ });
  await s5.close();
  await s.close();

  // --ipv6-underlay ipv4: every Route6 over IPv4
  const s6 = source(prefix, { publicIp: '192.0.2.1', publicIpv6: '2001:db8::1', ipv6Underlay: 'ipv4' });
  t.teardown(() => s6.close());
  await s6.start();
  t.equal(s6.acquiredHow, 'reused');
  const sink6 = new DualSink();
  await s6.sync(sink6);
  t.same(sink6.snapshot6(), ['fd00::4/126>192.0.2.51|v4', 'fd00::8/126>192.0.2.53|v4']);
  await s6.close();
});

t.test('our IPv4-only lease in a network that turned dual-stack: deleted and both subnets picked anew (flannel)', async (t) => {
  const { prefix, admin } = await setup(DUAL());
  const old = `${prefix}/subnets/10.244.9.0-24`;
  await admin.put(old).value(flannelLeaseValue('192.0.2.9'));
  const s = source(prefix, { publicIp: '192.0.2.9', publicIpv6: '2001:db8::9' });
  t.teardown(() => s.close());
  const r = await s.start();
  t.equal(await admin.get(old).string(), null, 'the IPv4-only key of our PublicIP is deleted');
  t.equal(s.acquiredHow, 'random');
  t.ok(r.lease.subnet6);
  t.match((s.leaseKey ?? '').slice(`${prefix}/subnets/`.length), DUAL_KEY);
  t.ok((s.leaseKey ?? '').startsWith(`${prefix}/subnets/`));
  t.equal(await admin.get(s.leaseKey ?? '').string(), '{"PublicIP":"192.0.2.9","PublicIPv6":"2001:db8::9"}');
  await s.close();
});

t.test('the keeper restores the dual-stack key (same key, same value) after it is deleted', async (t) => {
  const { prefix, admin } = await setup(DUAL());
  const s = source(prefix, { publicIp: '192.0.2.4', publicIpv6: '2001:db8::4' });
  t.teardown(() => s.close());
  await s.start();
  const key = s.leaseKey ?? '';
  const value = await admin.get(key).string();
  await admin.delete().key(key);
  await waitFor('key re-created', async () => (await admin.get(key).string()) !== null, 5000);
  t.equal(await admin.get(key).string(), value);
  t.equal((await admin.getAll().prefix(`${prefix}/subnets/`).keys()).length, 1, 'no other key');
  await waitFor('lease valid again', () => s.stats().leaseValid, 5000);
  await s.close();
});

t.test('bad dual-stack configs fail start with the key and field named', async (t) => {
  for (const [config, field, re] of [
    [DUAL({ IPv6Network: undefined }), 'IPv6Network', /IPv6Network: missing: EnableIPv6 is true/],
    [DUAL({ IPv6Network: 'fd00::/125' }), 'IPv6Network', /too small/],
    [DUAL({ IPv6SubnetLen: 127 }), 'IPv6SubnetLen', /127 is longer than 126/],
    [DUAL({ EnableIPv4: false }), 'EnableIPv4', /IPv6-only network\) is not supported/],
  ] as const) {
    const { prefix } = await setup(config);
    const s = source(prefix, { publicIp: '192.0.2.1' });
    t.teardown(() => s.close());
    const err = await s.start().then(() => undefined, (e: unknown) => e);
    t.ok(err instanceof NetworkConfigError, `${field}: a NetworkConfigError`);
    t.equal((err as NetworkConfigError).field, field);
    t.match((err as Error).message, `etcd key ${prefix}/config`);
    t.match((err as Error).message, re);
    await s.close();
  }
});

t.test('a change of IPv6Network while running is fatal; IPv6SubnetMax still containing our subnet is not', async (t) => {
  const base = DUAL({ IPv6SubnetMin: 'fd00:10:244:10::', IPv6SubnetMax: 'fd00:10:244:20::' });
  const { prefix, admin } = await setup(base);
  const logs = memoryLogger('info');
  const s = source(prefix, { publicIp: '192.0.2.1', logger: logs.logger });
  t.teardown(() => s.close());
  const fatals: Error[] = [];
  s.onFatal((e) => fatals.push(e));
  await s.start();
  await s.sync(new DualSink());
  await admin.put(`${prefix}/config`).value(DUAL({ IPv6SubnetMin: 'fd00:10:244:10::', IPv6SubnetMax: 'fd00:10:244:30::' }));
  await waitFor('harmless change logged', () => logs.msgs().includes('network config changed in a way this node does not depend on; ignored'), 5000);
  t.same(fatals, []);
  await admin.put(`${prefix}/config`).value(DUAL({ IPv6Network: 'fd00:10:245::/56' }));
  await waitFor('onFatal', () => fatals.length > 0, 5000);
  t.ok(fatals[0] instanceof ConfigError);
  t.match(fatals[0]?.message ?? '', /IPv6Network fd00:10:244::\/56 -> fd00:10:245::\/56/);
  t.match(fatals[0]?.message ?? '', `etcd key ${prefix}/config`);
  await s.close();
});
