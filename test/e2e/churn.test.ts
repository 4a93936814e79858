/**
 * Peer churn at scale (root only): 10,000 leases in etcd (a simulated 10,000-node cluster,
 * no real peers), then 10 bursts of 100 random adds/deletes. After every burst the daemon's
 * route table must equal etcd's leases. The time from each etcd write to the daemon's route
 * event (its own log timestamp) is reported as p50/p99, with the daemon's RSS and CPU.
 */
import t from 'tap';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { isRoot } from '../helpers/exec';
import { Topology, startDaemon, stopDaemon, OVERLAYD_BIN, type DaemonHandle } from '../helpers/topology';
import { NsEtcd } from '../../src/lab/etcd-ns';

const FIXTURES = path.resolve(__dirname, 'fixtures');
const PREFIX = '/coreos.com/network';
const LEASES = 10_000;
const BURSTS = 10;
const OPS_PER_BURST = 100;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

interface ChurnOut { ops: { subnet: string; op: 'put' | 'del'; t: number }[]; subnets: string[] }

function procStat(pid: number): { cpuSeconds: number; rssMB: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(f[11]) + Number(f[12]); // utime + stime, in clock ticks (100/s on Linux)
  const rssPages = Number(f[21]);
  return { cpuSeconds: ticks / 100, rssMB: (rssPages * 4096) / 1e6 };
}

function pct(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? NaN;
}

if (!isRoot) {
  t.skip('e2e churn test needs root', () => undefined);
} else {
  t.test(`${LEASES} leases, then ${BURSTS} x ${OPS_PER_BURST} random adds/deletes`, async (t) => {
    const topo = new Topology({ nodes: 1, podsPerNode: 0 });
    t.teardown(() => topo.cleanup());
    const etcd = new NsEtcd(topo.underlayNs, '10.99.0.254', path.join(topo.tmp, 'etcd'));
    t.teardown(() => etcd.stop());
    await etcd.start();
    t.equal(etcd.ctl(['put', `${PREFIX}/config`, '{"Network":"172.16.0.0/12","SubnetLen":26,"Backend":{"Type":"udp"}}']).status, 0);
    const churn = (...args: string[]): ChurnOut =>
      JSON.parse(topo.netns.exec(topo.underlayNs, process.execPath, [path.join(FIXTURES, 'etcd-churn.js'), args[0]!, etcd.endpoint, PREFIX, ...args.slice(1)], 120_000)) as ChurnOut;
    const filled = churn('fill', String(LEASES));
    t.equal(filled.subnets.length, LEASES);

    const node = topo.node(1);
    let daemon: DaemonHandle | undefined;
    t.teardown(async () => { if (daemon) await stopDaemon(daemon); });
    daemon = await startDaemon(node.ns, ['--engine', 'js', '--iface', 'eth0', '--etcd-endpoints', etcd.endpoint, '--subnet-file', path.join(topo.tmp, 'n1.env')], 60_000);
    const own = (JSON.parse(topo.netns.exec(node.ns, process.execPath, [OVERLAYD_BIN, 'status', '--json'])) as { lease: { subnet: string } }).lease.subnet;
    const routes = (): string[] => {
      const r = topo.netns.tryExec(node.ns, process.execPath, [OVERLAYD_BIN, 'status', '--json'], 30_000);
      if (r.status !== 0) throw new Error(`status failed: ${r.stderr}\n--- daemon output (tail):\n${daemon?.output().slice(-3000)}`);
      return (JSON.parse(r.stdout) as { routes: { subnet: string }[] }).routes.map((x) => x.subnet).sort();
    };
    const expected = (subnets: string[]) => subnets.filter((s) => s !== own).sort();
    t.same(routes(), expected(filled.subnets), `all ${LEASES} leases installed as routes`);

    const cpu0 = procStat(daemon.pid);
    const latencies: number[] = [];
    let rssMax = cpu0.rssMB;
    for (let burst = 0; burst < BURSTS; burst++) {
      const out = churn('burst', String(1000 + burst), String(OPS_PER_BURST));
      const want = expected(out.subnets);
      let got = routes();
      for (const t0 = Date.now(); JSON.stringify(got) !== JSON.stringify(want) && Date.now() - t0 < 60_000;) {
        await sleep(100);
        got = routes();
      }
      t.same(got, want, `burst ${burst + 1}: route table equals etcd (${want.length} routes)`);
      rssMax = Math.max(rssMax, procStat(daemon.pid).rssMB);
      // etcd write -> route event, from the daemon's own log timestamps
      const events = new Map<string, number[]>();
      for (const line of daemon.output().split('\n')) {
        const m = /"time":(\d+).*"subnet":"([\d./]+)".*"msg":"route (added|removed)"/.exec(line);
        if (m) events.set(`${m[3] === 'added' ? 'put' : 'del'} ${m[2]}`, [...(events.get(`${m[3] === 'added' ? 'put' : 'del'} ${m[2]}`) ?? []), Number(m[1])]);
      }
      for (const op of out.ops) {
        const ts = (events.get(`${op.op} ${op.subnet}`) ?? []).filter((x) => x >= op.t - 5);
        if (ts.length > 0) latencies.push(Math.min(...ts) - op.t);
      }
    }
    const cpu1 = procStat(daemon.pid);
    latencies.sort((a, b) => a - b);
    t.ok(latencies.length >= BURSTS * OPS_PER_BURST * 0.9, `latency measured for ${latencies.length} of ${BURSTS * OPS_PER_BURST} writes`);
    t.comment(`etcd write -> route event: p50 ${pct(latencies, 50)} ms, p99 ${pct(latencies, 99)} ms, max ${latencies[latencies.length - 1]} ms`);
    t.comment(`daemon during churn: CPU ${(cpu1.cpuSeconds - cpu0.cpuSeconds).toFixed(2)} s, RSS max ${rssMax.toFixed(1)} MB with ~${LEASES} routes`);
  });
}
