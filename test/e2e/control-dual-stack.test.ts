/**
 * The daemon in a dual-stack network (root only; one node, etcd in the underlay namespace):
 * its lease key and value in flannel's form, the subnet file it writes (FLANNEL_IPV6_* in
 * flannel's order), the status document (network6, lease6, routes6), a restart reusing both
 * subnets, and a fatal IPv6Network change (exit 1). Peers here have IPv4-only leases: the
 * IPv6 data path is the engines' (their own e2e tests).
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { isRoot } from '../helpers/exec';
import { Topology, startDaemon, stopDaemon, OVERLAYD_BIN } from '../helpers/topology';
import { NsEtcd } from '../../src/lab/etcd-ns';

const PREFIX = '/coreos.com/network';
const CONFIG = '{"Network":"10.244.0.0/16","EnableIPv6":true,"IPv6Network":"fd00:10:244::/56","Backend":{"Type":"udp"}}';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Status {
  network: { network: string; network6?: string };
  lease: { subnet: string; subnet6?: string; publicIpv6?: string | null };
  routes: { subnet: string }[];
  routes6?: unknown[];
}

if (!isRoot) {
  t.skip('SKIP: e2e dual-stack control plane needs root (network namespaces, TUN devices)', () => undefined);
} else {
  t.test('daemon in a dual-stack network: key, value, subnet file, status, restart, fatal IPv6Network change', async (t) => {
    const topo = new Topology({ nodes: 1, podsPerNode: 0, podsNow: false, tag: 'ov6c' });
    t.teardown(() => topo.cleanup());
    const etcd = new NsEtcd(topo.underlayNs, '10.99.0.254', path.join(topo.tmp, 'etcd'));
    t.teardown(() => etcd.stop());
    await etcd.start();
    t.equal(etcd.ctl(['put', `${PREFIX}/config`, CONFIG]).status, 0);
    // an IPv4-only peer (an older flannel node): an IPv4 route, nothing for IPv6
    t.equal(etcd.ctl(['put', `${PREFIX}/subnets/10.244.200.0-24`, '{"PublicIP":"10.99.0.200","PublicIPv6":null}']).status, 0);

    const n1 = topo.node(1);
    const subnetFile = path.join(topo.tmp, 'subnet.env');
    const args = ['--engine', 'js', '--iface', 'eth0', '--etcd-endpoints', etcd.endpoint, '--subnet-file', subnetFile, '--public-ipv6', '2001:db8:0:0::1'];
    const d1 = await startDaemon(n1.ns, args);
    let stopped = false;
    t.teardown(async () => { if (!stopped) await stopDaemon(d1); });

    const keys = etcd.ctl(['get', '--prefix', `${PREFIX}/subnets/`, '--keys-only']).stdout.split('\n').filter((l) => l.trim() !== '' && !l.endsWith('10.244.200.0-24'));
    t.equal(keys.length, 1, 'one lease of ours');
    const key = keys[0] ?? '';
    const m = /^\/coreos\.com\/network\/subnets\/10\.244\.(\d+)\.0-24&fd00:10:244:([0-9a-f]+)::-64$/.exec(key);
    t.ok(m, `flannel's dual-stack key: ${key}`);
    t.equal(etcd.ctl(['get', key, '--print-value-only']).stdout.trim(), '{"PublicIP":"10.99.0.1","PublicIPv6":"2001:db8::1"}');
    const [v4, v6] = [m?.[1], m?.[2]];
    const file = readFileSync(subnetFile, 'utf8');
    t.match(file, new RegExp(
      `^FLANNEL_NETWORK=10\\.244\\.0\\.0/16\\nFLANNEL_SUBNET=10\\.244\\.${v4}\\.1/24\\nFLANNEL_IPV6_NETWORK=fd00:10:244::/56\\n` +
        `FLANNEL_IPV6_SUBNET=fd00:10:244:${v6}::1/64\\nFLANNEL_MTU=\\d+\\nFLANNEL_IPMASQ=false\\n$`,
    ), 'subnet file: flannel\'s names, order and formats');

    const st = JSON.parse(topo.netns.exec(n1.ns, process.execPath, [OVERLAYD_BIN, 'status', '--json'])) as Status;
    t.equal(st.network.network6, 'fd00:10:244::/56');
    t.equal(st.lease.subnet6, `fd00:10:244:${v6}::/64`);
    t.equal(st.lease.publicIpv6, '2001:db8::1');
    t.same(st.routes.map((r) => r.subnet), ['10.244.200.0/24'], 'the IPv4-only peer: an IPv4 route');
    t.same(st.routes6, [], 'and no IPv6 route');

    // restart: both subnets reused (the lease of our PublicIP)
    t.equal((await stopDaemon(d1, 30_000)).code, 0);
    stopped = true;
    const d2 = await startDaemon(n1.ns, args);
    t.teardown(() => stopDaemon(d2));
    t.match(d2.output(), /subnet lease acquired: reusing the lease held by this PublicIP/);
    t.equal(readFileSync(subnetFile, 'utf8'), file, 'same subnets, same file');

    // a new IPv6Network: fatal, exit 1
    t.equal(etcd.ctl(['put', `${PREFIX}/config`, CONFIG.replace('fd00:10:244::/56', 'fd00:10:245::/56')]).status, 0);
    const code = await Promise.race([d2.exited, sleep(60_000).then(() => 'still running')]);
    t.equal(code, 1, 'exits 1 on its own on a fatal config change', { output: d2.output().slice(-2000) });
    t.match(d2.output(), /IPv6Network fd00:10:244::\/56 -> fd00:10:245::\/56/);
  });
}
