/**
 * overlayd with its normal route source, a real etcd (root only): etcd runs in the underlay
 * namespace of the DESIGN.md topology; each node leases a subnet, then gets its pods (as the
 * CNI plugin would, from the subnet file). Covers forwarding with etcd routes, hand-written
 * flannel leases, an etcd outage during a transfer, /healthz following the lease, and a
 * subnet taken over by another node.
 */
import t from 'tap';
import { spawn } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { isRoot, run } from '../helpers/exec';
import { Topology, spawnDaemon, startDaemon, stopDaemon, waitForLog, OVERLAYD_BIN, type DaemonHandle, type NodeInfo } from '../helpers/topology';
import { NsEtcd } from '../../src/lab/etcd-ns';
import { parseSubnetFile } from '../../src/control/subnet-file';
import { formatPrefix } from '../../src/net/addr';

const FIXTURES = path.resolve(__dirname, 'fixtures');
const PREFIX = '/coreos.com/network';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Status { routes: { subnet: string; publicIp: string }[]; lease: { subnet: string; valid: boolean } }

function status(topo: Topology, node: NodeInfo): Status {
  // exit 1 (unhealthy, e.g. lease expired during the outage) still prints the document
  const r = topo.netns.tryExec(node.ns, process.execPath, [OVERLAYD_BIN, 'status', '--json']);
  if (r.status !== 0 && r.status !== 1) throw new Error(`overlayd status: exit ${r.status}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Status;
}

function healthz(topo: Topology, node: NodeInfo): number {
  const out = topo.netns.exec(node.ns, process.execPath, [path.join(FIXTURES, 'http-get.js'), 'http://127.0.0.1:9285/healthz']);
  return Number(out.split('\n')[0]);
}

/** Polls (bounded) until cond holds; returns the ms it took, or -1. */
async function within(ms: number, cond: () => boolean): Promise<number> {
  const t0 = Date.now();
  while (Date.now() - t0 < ms) {
    if (cond()) return Date.now() - t0;
    await sleep(50);
  }
  return cond() ? Date.now() - t0 : -1;
}

if (!isRoot) {
  t.skip('e2e etcd tests need root (network namespaces, TUN devices)', () => undefined);
} else {
  t.test('etcd route source', async (t) => {
    const topo = new Topology({ nodes: 2, podsPerNode: 1, podsNow: false });
    t.teardown(() => topo.cleanup());
    const etcd = new NsEtcd(topo.underlayNs, '10.99.0.254', path.join(topo.tmp, 'etcd'));
    t.teardown(() => etcd.stop());
    await etcd.start();

    await t.test('config key missing: waits (logged once); SIGTERM while waiting exits 0; then it appears and start-up goes on', async (t) => {
      const n1 = topo.node(1);
      const base = ['--engine', 'js', '--iface', 'eth0', '--etcd-endpoints', etcd.endpoint, '--subnet-file', path.join(topo.tmp, 'wait.env')];
      const waiting = spawnDaemon(n1.ns, base);
      await waitForLog(waiting, /network config not found in etcd; waiting/, 15_000);
      const { code, ms } = await stopDaemon(waiting, 30_000);
      t.equal(code, 0, 'exit 0', { output: waiting.output() });
      t.comment(`stopped ${ms} ms after SIGTERM`);
      t.not(run('ip', ['-n', n1.ns, 'link', 'show', 'flannel0']).status, 0, 'no TUN left');
      t.equal(etcd.ctl(['get', '--prefix', `${PREFIX}/subnets/`, '--keys-only']).stdout.trim(), '', 'no lease taken');

      const second = spawnDaemon(n1.ns, base);
      await waitForLog(second, /network config not found in etcd; waiting/, 15_000);
      await sleep(2500);
      t.equal(second.output().match(/network config not found/g)?.length, 1, 'logged once while waiting');
      t.equal(etcd.ctl(['put', `${PREFIX}/config`, '{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}']).status, 0);
      await waitForLog(second, /"msg":"forwarding"/, 15_000);
      t.equal((await stopDaemon(second, 30_000)).code, 0);
      // leave the lease: the next daemon on this node reuses it (same PublicIP)
    });

    const daemons = new Map<number, DaemonHandle>();
    t.teardown(async () => { for (const d of daemons.values()) await stopDaemon(d); });
    const [n1, n2] = [topo.node(1), topo.node(2)];
    for (const node of [n1, n2]) {
      const subnetFile = path.join(topo.tmp, `n${node.index}.env`);
      daemons.set(node.index, await startDaemon(node.ns, ['--engine', 'js', '--iface', 'eth0', '--etcd-endpoints', etcd.endpoint,
        '--subnet-file', subnetFile, '--subnet-lease-ttl', '12s', '--log-level', 'info']));
      const sf = parseSubnetFile(readFileSync(subnetFile, 'utf8'), subnetFile);
      topo.addPods(node.index, formatPrefix(sf.subnet), 1500);
    }
    const [p1, p2] = [n1.pods[0]!, n2.pods[0]!];
    const tunAddr = n1.subnet.replace(/\/24$/, '');

    t.test('leases in flannel form; routes from etcd; pods reach each other', async (t) => {
      const v = etcd.ctl(['get', `${PREFIX}/subnets/${n1.subnet.replace('/', '-')}`, '--print-value-only']).stdout.trim();
      t.equal(v, '{"PublicIP":"10.99.0.1","PublicIPv6":null}');
      t.ok(await within(30_000, () => status(topo, n1).routes.length === 1) >= 0, 'node 1 has the route to node 2');
      t.same(status(topo, n1).routes.map((r) => [r.subnet, r.publicIp]), [[n2.subnet, n2.underlayIp]]);
      for (const [a, b] of [[p1, p2], [p2, p1]] as const) {
        const r = topo.netns.tryExec(a.ns, 'ping', ['-n', '-c', '2', '-i', '0.2', '-W', '2', b.ip]);
        t.equal(r.status, 0, `${a.ip} -> ${b.ip}`, { output: r.stdout });
      }
      const un = topo.netns.tryExec(p1.ns, 'ping', ['-n', '-c', '1', '-W', '2', '10.244.250.9']);
      t.match(un.stdout, new RegExp(`From ${tunAddr.replace(/\./g, '\\.')} icmp_seq=1 Destination Net Unreachable`));
    });

    t.test('a lease written by hand, flannel style, becomes a route; deleting it removes it', async (t) => {
      const key = `${PREFIX}/subnets/10.244.200.0-24`;
      const d1 = daemons.get(1)!;
      // the daemon's own log time of the route event against the time etcdctl returned
      const logTime = (msg: string): number | undefined => {
        for (const line of d1.output().split('\n')) {
          if (line.includes(`"msg":"${msg}"`) && line.includes('"subnet":"10.244.200.0/24"')) return (JSON.parse(line) as { time: number }).time;
        }
        return undefined;
      };
      const t0 = Date.now();
      t.equal(etcd.ctl(['put', key, '{"PublicIP":"10.99.0.200","PublicIPv6":null}']).status, 0);
      t.ok(await within(30_000, () => logTime('route added') !== undefined) >= 0, 'route added');
      // the latency is a diagnostic: a loaded machine stalls it, the route coming is the check
      t.comment(`route installed ${(logTime('route added') ?? NaN) - t0} ms after the write began`);
      t.ok(status(topo, n1).routes.some((r) => r.subnet === '10.244.200.0/24' && r.publicIp === '10.99.0.200'), 'and in the data plane');
      const t1 = Date.now();
      t.equal(etcd.ctl(['del', key]).status, 0);
      t.ok(await within(30_000, () => logTime('route removed') !== undefined) >= 0, 'route removed');
      t.comment(`route removed ${(logTime('route removed') ?? NaN) - t1} ms after the delete began`);
      t.notOk(status(topo, n1).routes.some((r) => r.subnet === '10.244.200.0/24'), 'and gone from the data plane');
    });

    t.test('etcd down for 20 s during a transfer: it completes intact; health follows the lease; changes flow again', async (t) => {
      const bytes = 24 * 1024 * 1024;
      const server = spawn('ip', ['netns', 'exec', p2.ns, process.execPath, path.join(FIXTURES, 'tcp-xfer.js'), 'serve', '5002', '120000'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let serverOut = '';
      server.stdout.on('data', (d: Buffer) => { serverOut += d.toString(); });
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => reject(new Error('tcp-xfer server did not listen within 30 s')), 30_000);
        server.stderr.on('data', (d: Buffer) => { if (d.toString().includes('listening')) { clearTimeout(timer); resolve(); } });
      });
      const serverDone = new Promise<number | null>((resolve) => server.on('exit', (c) => resolve(c)));
      // ~1 MB/s: the transfer spans the whole outage
      const client = spawn('ip', ['netns', 'exec', p1.ns, process.execPath, path.join(FIXTURES, 'tcp-xfer.js'), 'send', p2.ip, '5002', String(bytes), '120000', String(1024 * 1024)], { stdio: ['ignore', 'pipe', 'pipe'] });
      let clientOut = '';
      client.stdout.on('data', (d: Buffer) => { clientOut += d.toString(); });
      const clientDone = new Promise<number | null>((resolve) => client.on('exit', (c) => resolve(c)));

      await sleep(2000);
      await etcd.stop();
      const downAt = Date.now();
      // the lease TTL is 12 s: with etcd gone it cannot be renewed, so health must turn 503
      const unhealthy = await within(19_000, () => healthz(topo, n1) === 503);
      t.ok(unhealthy >= 0, `/healthz 503 after ${unhealthy} ms of outage`);
      t.ok(status(topo, n1).routes.length === 1, 'routes stay in force while etcd is away');
      await sleep(Math.max(0, 20_000 - (Date.now() - downAt)));
      await etcd.start();
      const healthy = await within(60_000, () => healthz(topo, n1) === 200);
      t.ok(healthy >= 0, `/healthz 200 again ${healthy} ms after etcd returned`);

      t.equal(await clientDone, 0, 'sender finished');
      t.equal(await serverDone, 0, 'receiver finished');
      const [sentN, sentHash] = clientOut.trim().split(' ');
      const [gotN, gotHash] = serverOut.trim().split(' ');
      t.equal(Number(sentN), bytes);
      t.equal(Number(gotN), bytes, 'every byte arrived');
      t.equal(gotHash, sentHash, 'intact (sha256)');

      t.equal(etcd.ctl(['put', `${PREFIX}/subnets/10.244.201.0-24`, '{"PublicIP":"10.99.0.201","PublicIPv6":null}']).status, 0);
      const ms = await within(30_000, () => status(topo, n1).routes.some((r) => r.subnet === '10.244.201.0/24'));
      t.ok(ms >= 0, `a lease written after the outage reached node 1 (${ms} ms)`);
      const log = daemons.get(1)?.output() ?? '';
      t.match(log, /"msg":"etcd watch broken; will re-list and resync"|"msg":"lease renewal failed/, 'the outage is logged');
      const etcdLines = { log: log.split('\n').filter((l) => /etcd|lease|watch/.test(l)).join('\n').slice(-4000) };
      t.match(log, /"msg":"etcd watch resumed after re-list \(resync\)"|"failedTries":\d+,"msg":"lease renewed"/, 'the recovery is logged', etcdLines);

    });

    t.test('this node\'s subnet taken over by another node: exit non-zero, TUN removed', async (t) => {
      const d2 = daemons.get(2)!;
      t.equal(etcd.ctl(['put', `${PREFIX}/subnets/${n2.subnet.replace('/', '-')}`, '{"PublicIP":"10.99.0.77","PublicIPv6":null}']).status, 0);
      const code = await Promise.race([d2.exited, sleep(30_000).then(() => 'timeout')]);
      t.equal(code, 1, 'exit code 1', { output: d2.output().slice(-2000) });
      daemons.delete(2);
      t.match(d2.output(), /lost to another node|held by another node|now held by/i);
      t.not(run('ip', ['-n', n2.ns, 'link', 'show', 'flannel0']).status, 0, 'flannel0 removed');
    });
  });
}
