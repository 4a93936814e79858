/**
 * The ICMP error rate limit (RFC 1812 4.3.2.8), both engines (root only): a pod floods an
 * address inside the cluster Network that no node leases; every packet is drop_no_route,
 * and of the ICMP net-unreachable errors at most burst + rate * elapsed are sent, the rest
 * counted as drop_icmp_ratelimit (icmp_sent + drop_icmp_ratelimit = packets). Asserts the
 * accounting identity and an upper bound from the test's own elapsed time (an
 * over-estimate of the engine's), never a speed.
 */
import t from 'tap';
import * as path from 'node:path';
import { isRoot, run } from '../helpers/exec';
import { ENGINES } from '../helpers/engines';
import { Topology, startDaemon, stopDaemon, OVERLAYD_BIN, type DaemonHandle } from '../helpers/topology';
import { flatCounters, type StatusDoc } from '../../src/ops/status-types';

const FIXTURES = path.resolve(__dirname, 'fixtures');
const PACKETS = 300;
const RATE = 10; // errors per second
const BURST = 5;
const UNLEASED = '10.244.250.9';


if (!isRoot) {
  t.skip('SKIP: e2e ICMP rate limit test needs root (network namespaces, TUN devices)', () => undefined);
} else {
  const topo = new Topology({ nodes: 1, podsPerNode: 1 });
  t.teardown(() => topo.cleanup());
  const n1 = topo.node(1);
  const pod = n1.pods[0]!;
  /** the status counters flattened: "drops.no_route", "icmp_errors_sent", ... (the words of /metrics) */
  const statusOf = (): { counters: Record<string, number> } => {
    const doc = JSON.parse(topo.netns.exec(n1.ns, process.execPath, [OVERLAYD_BIN, 'status', '--json'], 10_000)) as StatusDoc;
    return { counters: doc.counters ? flatCounters(doc.counters) : {} };
  };
  const metricsOf = (): string =>
    topo.netns.exec(n1.ns, process.execPath, ['-e', "fetch('http://127.0.0.1:9285/metrics').then((r) => r.text()).then((s) => process.stdout.write(s))"], 10_000);

  for (const engine of ENGINES) {
    t.test(`${engine} engine: a flood to an unleased address`, async (t) => {
      let daemon: DaemonHandle | undefined = await startDaemon(n1.ns, [
        '--engine', engine, '--iface', 'eth0', '--static-config', topo.staticConfig(1), '--subnet-file', path.join(topo.tmp, `n1-${engine}.env`),
        '--icmp-ratelimit-rate', String(RATE), '--icmp-ratelimit-burst', String(BURST),
      ]);
      t.teardown(async () => { if (daemon) await stopDaemon(daemon); });
      const t0 = process.hrtime.bigint();
      // 300 datagrams of 16 bytes, one after the other (each send completes before the next)
      const payloads = Array.from({ length: PACKETS }, (_, i) => i.toString(16).padStart(32, '0'));
      const r = topo.netns.tryExec(pod.ns, process.execPath, [path.join(FIXTURES, 'udp-send.js'), pod.ip, '7000', UNLEASED, '7001', ...payloads], 60_000);
      t.equal(r.status, 0, `udp-send: ${r.stderr}`);
      // counters settle (bounded poll): every datagram reached the engine and was judged
      let s = statusOf();
      for (let i = 0; i < 200 && (s.counters['drops.no_route'] ?? 0) < PACKETS; i++) {
        await new Promise((res) => setTimeout(res, 100));
        s = statusOf();
      }
      const elapsed = Number(process.hrtime.bigint() - t0) / 1e9;
      const c = s.counters;
      const sent = c['icmp_errors_sent'] ?? -1, limited = c['drops.icmp_ratelimit'] ?? -1;
      t.equal(c['drops.no_route'], PACKETS, `drop_no_route ${PACKETS}`);
      t.equal(sent + limited, PACKETS, `icmp_sent ${sent} + drop_icmp_ratelimit ${limited} = ${PACKETS}`);
      const bound = BURST + RATE * elapsed;
      t.ok(sent >= 1 && sent <= bound, `icmp_sent ${sent} in 1..burst + rate x elapsed = ${bound.toFixed(1)} (${elapsed.toFixed(2)} s)`);
      t.equal(c['packets.tun_written'], sent, 'every ICMP error sent is one TUN write');
      t.match(metricsOf(), new RegExp(`overlayd_drops_total\\{engine="${engine}",queue="0",reason="icmp_ratelimit"\\} ${limited}\\b`), 'metrics: drops{reason="icmp_ratelimit"}');
      await stopDaemon(daemon);
      daemon = undefined;
    });
  }
  t.test('no namespace left behind', async (t) => {
    topo.cleanup();
    const names = run('ip', ['netns', 'list']).stdout.split('\n').map((l) => l.split(' ')[0] ?? '');
    t.same(names.filter((n) => n.startsWith(`${topo.netns.prefix}-`)), [], `none of ${topo.netns.prefix}-*`);
  });
}
