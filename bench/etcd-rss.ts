/**
 * Memory of the daemon with the etcd route source at scale (root; never part of `npm test`):
 * etcd in the lab's underlay namespace holding N flannel leases (default 10,000 /26s of
 * 172.16.0.0/12, written by test/e2e/fixtures/etcd-churn.js), one overlayd on node 1 that
 * leases its own subnet, lists them all and routes them. Prints the daemon's RSS and peak
 * (VmHWM) once it forwards, and its JS heap (the daemon's /metrics, read after the RSS).
 * A figure, not a test: issue 11's target is RSS <= 80 MB at 10,000 leases.
 *
 *   node dist/bench/etcd-rss.js [--leases N] [--engine native|js] [--settle S] [--json FILE]
 * RSS is read 3 s after "forwarding" and again after S more seconds idle (default 30):
 * V8's memory reducer gives garbage pages back only after a quiet spell.
 */
import { writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { NsEtcd } from '../src/lab/etcd-ns';
import { Topology, startDaemon, stopDaemon, type DaemonHandle } from '../src/lab/topology';
import { processMemory } from './procfs';

const PREFIX = '/coreos.com/network';
const CHURN = path.resolve(__dirname, '..', 'test', 'e2e', 'fixtures', 'etcd-churn.js');
const HTTP_GET = path.resolve(__dirname, '..', 'test', 'e2e', 'fixtures', 'http-get.js');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { leases: { type: 'string', default: '10000' }, engine: { type: 'string', default: 'native' }, settle: { type: 'string', default: '30' }, json: { type: 'string' } } });
  const leases = Number(values.leases);
  const engine = String(values.engine);
  if (process.getuid?.() !== 0) throw new Error('etcd-rss needs root (network namespaces, TUN)');
  const topo = new Topology({ nodes: 1, podsPerNode: 0, podsNow: false, tag: 'ovm' });
  const etcd = new NsEtcd(topo.underlayNs, '10.99.0.254', path.join(topo.tmp, 'etcd'));
  let daemon: DaemonHandle | undefined;
  try {
    await etcd.start();
    const put = etcd.ctl(['put', `${PREFIX}/config`, '{"Network":"172.16.0.0/12","SubnetLen":26,"Backend":{"Type":"udp"}}']);
    if (put.status !== 0) throw new Error(`etcdctl put: ${put.stderr}`);
    const t0 = Date.now();
    const fill = topo.netns.tryExec(topo.underlayNs, process.execPath, [CHURN, 'fill', etcd.endpoint, PREFIX, String(leases)], 300_000);
    if (fill.status !== 0) throw new Error(`filling etcd failed: ${fill.stderr}`);
    process.stdout.write(`${leases} leases written in ${Date.now() - t0} ms\n`);

    const n1 = topo.node(1);
    const t1 = Date.now();
    daemon = await startDaemon(n1.ns, ['--engine', engine, '--iface', 'eth0', '--etcd-endpoints', etcd.endpoint,
      '--subnet-file', path.join(topo.tmp, 'n1.env')], 120_000);
    const startMs = Date.now() - t1;
    await sleep(3000); // past start-up's garbage
    const memStart = processMemory(daemon.pid);
    // idle: V8's memory reducer runs its major GCs and returns pages (it waits for a quiet spell)
    await sleep(Number(values.settle) * 1000);
    const mem = processMemory(daemon.pid);
    // the daemon's own metrics (its status document with 10,000 routes is too big for a pipe)
    const text = topo.netns.exec(n1.ns, process.execPath, [HTTP_GET, 'http://127.0.0.1:9285/metrics']);
    const metric = (name: string): number => {
      const line = text.split('\n').find((l) => l.startsWith(`${name} `));
      return line ? Number(line.slice(name.length + 1)) : NaN;
    };
    const st = { routes: metric('overlayd_routes'), memory: {
      heapUsed: metric('overlayd_nodejs_heap_size_used_bytes'), heapTotal: metric('overlayd_nodejs_heap_size_total_bytes'),
      external: metric('overlayd_nodejs_external_memory_bytes'), arrayBuffers: NaN,
    } as Record<string, number> };
    const mb = (b: number | undefined) => ((b ?? 0) / 1e6).toFixed(1);
    const result = {
      leases, engine, routes: st.routes, startMs,
      rssStartMB: memStart?.rssMB, rssMB: mem?.rssMB, hwmMB: mem?.hwmMB, settleS: Number(values.settle),
      heapUsedMB: (st.memory['heapUsed'] ?? 0) / 1e6, heapTotalMB: (st.memory['heapTotal'] ?? 0) / 1e6,
      externalMB: (st.memory['external'] ?? 0) / 1e6,
    };
    process.stdout.write(
      `etcd source, ${leases} leases, --engine ${engine}: ${result.routes} routes, forwarding after ${startMs} ms\n` +
        `  RSS 3 s after start ${memStart?.rssMB.toFixed(1)} MB; after ${values.settle} s idle ${mem?.rssMB.toFixed(1)} MB (target <= 80 MB); peak VmHWM ${mem?.hwmMB.toFixed(1)} MB\n` +
        `  JS heap used ${mb(st.memory['heapUsed'])} MB of ${mb(st.memory['heapTotal'])} MB, external ${mb(st.memory['external'])} MB\n`,
    );
    if (values.json) writeFileSync(values.json, `${JSON.stringify(result, null, 2)}\n`);
  } finally {
    if (daemon) await stopDaemon(daemon);
    await etcd.stop();
    topo.cleanup();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`etcd-rss: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
  process.exit(1);
});
