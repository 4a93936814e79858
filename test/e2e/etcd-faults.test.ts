/**
 * overlayd against a 3-member etcd cluster in namespaces (root only), when etcd or the
 * cluster's data go wrong (issue 11, items 4-6):
 *  - the member the daemon watches on is cut off from the other two by nftables rules in its
 *    namespace: a lease written on the majority still reaches the daemon's routes (bound
 *    30 s), and the outage shows in its log, status and metrics;
 *  - the network config changes while running: whitespace is ignored; a new Backend.Port
 *    makes the daemon exit 1 naming the old and new values;
 *  - two daemons claim the same PublicIP: one exits 1 naming the other's etcd lease, and
 *    etcd's revision moves by a bounded amount over 30 s (no write storm).
 *
 *   ul: br0 10.99.0.254 (etcdctl runs here)   eK: etcd member K, 10.99.0.10K on br0
 *   nK: overlay node K, 10.99.0.K on br0
 */
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { isRoot, run } from '../helpers/exec';
import { Topology, startDaemon, stopDaemon, waitForLog, OVERLAYD_BIN, type DaemonHandle } from '../helpers/topology';

const FIXTURES = path.resolve(__dirname, 'fixtures');
const PREFIX = '/coreos.com/network';
const CONFIG = '{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":8285}}';
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface Member { readonly ns: string; readonly ip: string; readonly endpoint: string; proc?: ChildProcess; log: string }

interface Status {
  routes: { subnet: string; publicIp: string }[];
  etcd: { connected: boolean; leader: boolean | null; resyncs: number; lastResync: string | null } | null;
}

if (!isRoot) {
  t.skip('SKIP: e2e etcd fault tests need root (network namespaces, nftables)', () => undefined);
} else {
  t.test('etcd faults', async (t) => {
    const topo = new Topology({ nodes: 3, podsPerNode: 0, podsNow: false, tag: 'ovf' });
    t.teardown(() => topo.cleanup());
    const ns = topo.netns;
    const members: Member[] = [1, 2, 3].map((k) => {
      const m = ns.add(`e${k}`);
      ns.ip(m, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', `ve${k}`, 'netns', topo.underlayNs);
      ns.ip(topo.underlayNs, 'link', 'set', `ve${k}`, 'master', 'br0', 'up');
      ns.ip(m, 'addr', 'add', `10.99.0.10${k}/24`, 'dev', 'eth0');
      ns.ip(m, 'link', 'set', 'eth0', 'up');
      return { ns: m, ip: `10.99.0.10${k}`, endpoint: `http://10.99.0.10${k}:2379`, log: '' };
    });
    const cluster = members.map((m, i) => `m${i + 1}=http://${m.ip}:2380`).join(',');
    members.forEach((m, i) => {
      const dir = path.join(topo.tmp, `etcd-m${i + 1}`);
      mkdirSync(dir, { recursive: true });
      const p = spawn('ip', ['netns', 'exec', m.ns, 'etcd', '--name', `m${i + 1}`, '--data-dir', dir,
        '--listen-client-urls', m.endpoint, '--advertise-client-urls', m.endpoint,
        '--listen-peer-urls', `http://${m.ip}:2380`, '--initial-advertise-peer-urls', `http://${m.ip}:2380`,
        '--listen-metrics-urls', `http://${m.ip}:2381`,
        '--initial-cluster', cluster, '--initial-cluster-state', 'new', '--initial-cluster-token', ns.prefix,
        '--heartbeat-interval', '100', '--election-timeout', '1000', '--log-level', 'warn'], { stdio: ['ignore', 'ignore', 'pipe'] });
      p.stderr?.on('data', (d: Buffer) => { m.log = (m.log + d.toString()).slice(-20_000); });
      m.proc = p;
    });
    t.teardown(async () => {
      for (const m of members) {
        const p = m.proc;
        if (!p || p.exitCode !== null || p.signalCode !== null) continue;
        const exited = new Promise((r) => p.once('exit', r));
        p.kill('SIGTERM');
        const timer = setTimeout(() => p.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(timer);
      }
    });
    const endpoints = members.map((m) => m.endpoint).join(',');
    const ctl = (eps: string, args: string[]) => run('ip', ['netns', 'exec', topo.underlayNs, 'etcdctl', `--endpoints=${eps}`, '--command-timeout=5s', ...args], {
      timeoutMs: 15_000, env: { ...process.env, ETCDCTL_API: '3' },
    });
    /** Waits (60 s at most: a loaded machine, as the lab's etcd) until every member answers with a leader. */
    const waitHealthy = async (): Promise<void> => {
      const deadline = Date.now() + 60_000;
      while (ctl(endpoints, ['endpoint', 'health']).status !== 0) {
        if (Date.now() > deadline) throw new Error(`etcd cluster not healthy:\n${members.map((m) => m.log.slice(-1500)).join('\n')}`);
        await sleep(200);
      }
    };
    /** An idempotent etcdctl write, retried (20 tries, 500 ms apart) across an election (a partition healing disrupts the leader). */
    const write = async (eps: string, args: string[]) => {
      let r = ctl(eps, args);
      for (let i = 0; i < 20 && r.status !== 0; i++) {
        await sleep(500);
        r = ctl(eps, args);
      }
      return r;
    };
    await waitHealthy();
    t.equal(ctl(endpoints, ['put', `${PREFIX}/config`, CONFIG]).status, 0, 'config written');

    const httpGet = (nsName: string, url: string) => ns.tryExec(nsName, process.execPath, [path.join(FIXTURES, 'http-get.js'), url]);
    const status = (nsName: string): Status => JSON.parse(ns.exec(nsName, process.execPath, [OVERLAYD_BIN, 'status', '--json'])) as Status;
    const metric = (text: string, name: string): number => {
      const line = text.split('\n').find((l) => l.startsWith(`${name} `));
      return line ? Number(line.slice(name.length + 1)) : NaN;
    };
    const revision = (): number => {
      const r = ctl(endpoints, ['endpoint', 'status', '-w', 'json']);
      const rows = JSON.parse(r.stdout) as { Status: { header: { revision: number } } }[];
      return Math.max(...rows.map((x) => Number(x.Status.header.revision)));
    };
    const daemons: DaemonHandle[] = [];
    t.teardown(async () => { for (const d of daemons) await stopDaemon(d); });
    const base = (k: number) => ['--engine', 'js', '--iface', 'eth0', '--etcd-endpoints', endpoints, '--subnet-file', path.join(topo.tmp, `n${k}.env`)];

    await t.test('the member the daemon watches on is cut off: a lease written on the majority still arrives; the outage is visible', async (t) => {
      const n1 = topo.node(1);
      const d = await startDaemon(n1.ns, base(1), 30_000);
      daemons.push(d);
      // the member serving the daemon's watches (etcdctl holds none)
      let watched = -1;
      for (let i = 0; i < 50 && watched < 0; i++) {
        const counts = members.map((m) => metric(httpGet(m.ns, `http://${m.ip}:2381/metrics`).stdout, 'etcd_debugging_mvcc_watcher_total'));
        watched = counts.findIndex((c) => c > 0);
        if (watched < 0) await sleep(200);
      }
      t.ok(watched >= 0, `the daemon watches on member m${watched + 1}`);
      const a = members[watched] as Member;
      const others = members.filter((m) => m !== a);
      const majority = others.map((m) => m.endpoint).join(',');
      const before = status(n1.ns);
      const metricsBefore = httpGet(n1.ns, 'http://127.0.0.1:9285/metrics').stdout;

      // cut A off from B and C (client traffic from the node still reaches A)
      const set = others.map((m) => m.ip).join(', ');
      const rules = path.join(topo.tmp, 'partition.nft');
      writeFileSync(rules, [
        'table inet ovtpart {',
        `  chain in { type filter hook input priority 0; ip saddr { ${set} } drop; }`,
        `  chain out { type filter hook output priority 0; ip daddr { ${set} } drop; }`,
        '}', '',
      ].join('\n'));
      ns.exec(a.ns, 'nft', ['-f', rules]);
      const cutAt = Date.now();
      const key = `${PREFIX}/subnets/10.244.222.0-24`;
      const put = await write(majority, ['put', key, '{"PublicIP":"10.99.0.222","PublicIPv6":null}']); // the majority may be electing a new leader
      t.equal(put.status, 0, 'lease written on the majority', { stderr: put.stderr });
      const writtenAt = Date.now();
      let arrived = -1;
      while (Date.now() - writtenAt < 30_000) {
        if (status(n1.ns).routes.some((r) => r.subnet === '10.244.222.0/24' && r.publicIp === '10.99.0.222')) { arrived = Date.now() - writtenAt; break; }
        await sleep(250);
      }
      t.comment(`lease written ${writtenAt - cutAt} ms after the cut; in the daemon's routes ${arrived} ms after the write`);
      t.ok(arrived >= 0, 'the lease reached the daemon within 30 s', { log: d.output().slice(-3000) });

      const log = d.output();
      t.match(log, /"msg":"etcd member has no leader \(cut off from its cluster\?\); re-listing from another member"/, 'logged as an error');
      const after = status(n1.ns);
      t.ok((after.etcd?.resyncs ?? 0) > (before.etcd?.resyncs ?? 0), `status: resyncs ${before.etcd?.resyncs} -> ${after.etcd?.resyncs}`);
      t.ok(after.etcd?.lastResync !== null && Date.parse(after.etcd?.lastResync ?? '') >= cutAt - 1000, `status: lastResync ${after.etcd?.lastResync}`);
      const metricsAfter = httpGet(n1.ns, 'http://127.0.0.1:9285/metrics').stdout;
      const r0 = metric(metricsBefore, 'overlayd_watch_resyncs_total');
      const r1 = metric(metricsAfter, 'overlayd_watch_resyncs_total');
      t.ok(r1 > r0, `metrics: overlayd_watch_resyncs_total ${r0} -> ${r1}`);
      t.ok(metric(metricsAfter, 'overlayd_etcd_last_resync_timestamp_seconds') * 1000 >= cutAt - 1000, 'metrics: overlayd_etcd_last_resync_timestamp_seconds after the cut');
      t.ok(Number.isFinite(metric(metricsAfter, 'overlayd_etcd_leader')), 'metrics: overlayd_etcd_leader exported');

      ns.exec(a.ns, 'nft', ['delete', 'table', 'inet', 'ovtpart']);
      await waitHealthy(); // A rejoins: the cluster may hold an election first
      t.equal((await write(endpoints, ['del', key])).status, 0);
      t.ok(d.child.exitCode === null, 'daemon still running');
    });

    await t.test('the network config changes: whitespace ignored; a new Backend.Port: exit 1 naming old and new', async (t) => {
      const d = daemons[0] as DaemonHandle;
      t.equal((await write(endpoints, ['put', `${PREFIX}/config`, ` {"Backend":{"Port":8285,"Type":"udp"}, "Network":"10.244.0.0/16"}\n`])).status, 0);
      await waitForLog(d, /"msg":"network config rewritten without a change that matters; ignored"/, 60_000);
      t.ok(d.child.exitCode === null, 'still running');
      t.equal((await write(endpoints, ['put', `${PREFIX}/config`, '{"Network":"10.244.0.0/16","Backend":{"Type":"udp","Port":8472}}'])).status, 0);
      const code = await Promise.race([d.exited, sleep(60_000).then(() => 'timeout')]);
      t.equal(code, 1, 'exit code 1', { output: d.output().slice(-2000) });
      t.match(d.output(), /Backend\.Port 8285 -> 8472/);
      t.not(run('ip', ['-n', topo.node(1).ns, 'link', 'show', 'flannel0']).status, 0, 'flannel0 removed');
      t.equal((await write(endpoints, ['put', `${PREFIX}/config`, CONFIG])).status, 0);
    });

    await t.test('two daemons claim the same PublicIP: one exits 1 naming the other\'s etcd lease; writes bounded over 30 s', async (t) => {
      const [n2, n3] = [topo.node(2), topo.node(3)];
      const d2 = await startDaemon(n2.ns, [...base(2), '--public-ip', '10.99.0.2'], 30_000);
      daemons.push(d2);
      const rev0 = revision();
      const t0 = Date.now();
      // a copy of node 2's image: node 3 says it is 10.99.0.2 too
      const d3 = await startDaemon(n3.ns, [...base(3), '--public-ip', '10.99.0.2'], 30_000).catch((err: unknown) => {
        t.comment(`node 3 did not reach "forwarding": ${String(err).slice(0, 300)}`);
        return undefined;
      });
      if (d3) daemons.push(d3);
      await sleep(Math.max(0, 30_000 - (Date.now() - t0)));
      const writes = revision() - rev0;
      t.comment(`etcd revision moved by ${writes} in 30 s with two daemons on PublicIP 10.99.0.2`);
      t.ok(writes <= 20, `bounded: ${writes} writes`);
      const exited = [d2, d3].filter((d): d is DaemonHandle => d !== undefined && d.child.exitCode !== null);
      t.ok(exited.length >= 1, 'one of them stopped');
      for (const d of exited) {
        t.equal(d.child.exitCode, 1, 'exit code 1');
        t.match(d.output(), /two nodes claim PublicIP 10\.99\.0\.2/, 'says why');
        t.match(d.output(), /keeps being moved to etcd lease \d+ by another writer with the same PublicIP/, 'names the other etcd lease');
      }
    });
  });
}
