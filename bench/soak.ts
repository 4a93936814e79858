/**
 * Soak (`npm run soak -- [--minutes M] [--engine native|js] [--json FILE]`, root; never part
 * of `npm test`): 3 nodes with etcd, mixed pod traffic for M minutes (default 10) — a TCP
 * stream n1 -> n2, a UDP stream n2 -> n3, pings n3 -> n1 — while a lease comes and goes every
 * 5 s (route churn on every node). Every 10 s it samples each daemon's RSS and open fds.
 * Reports the least-squares slope of both (per hour), and every drop counter: there must be
 * no drops of the daemons' own (`drop_*`, `tx_error`), so any is printed as unexplained.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { Janitor } from './janitor';
import { processMemory } from './procfs';
import { NsEtcd } from '../src/lab/etcd-ns';
import { Topology, startDaemon, stopDaemon, OVERLAYD_BIN, type DaemonHandle } from '../src/lab/topology';
import { parseSubnetFile } from '../src/control/subnet-file';
import { formatPrefix } from '../src/net/addr';
import { flatCounters, type StatusDoc } from '../src/ops/status-types';

const SAMPLE_EVERY_MS = 10_000;
const CHURN_EVERY_MS = 5_000;
const PREFIX = '/coreos.com/network';

interface Sample { tSec: number; node: number; rssMB: number; fds: number }

/** least-squares slope of y over x */
function slope(xs: number[], ys: number[]): number {
  const n = xs.length;
  if (n < 2) return NaN;
  const mx = xs.reduce((a, b) => a + b, 0) / n;
  const my = ys.reduce((a, b) => a + b, 0) / n;
  let num = 0;
  let den = 0;
  for (let i = 0; i < n; i++) {
    num += (xs[i]! - mx) * (ys[i]! - my);
    den += (xs[i]! - mx) ** 2;
  }
  return den === 0 ? 0 : num / den;
}

async function main(): Promise<number> {
  const { values } = parseArgs({ options: { minutes: { type: 'string', default: '10' }, engine: { type: 'string', default: 'native' }, json: { type: 'string' } }, strict: true });
  const minutes = Number(values.minutes);
  if (!(minutes > 0 && minutes <= 24 * 60)) throw new Error('--minutes: a number of minutes, > 0 and <= 1440');
  if (process.getuid?.() !== 0) throw new Error('the soak needs root (network namespaces, TUN devices)');
  const engine = values.engine ?? 'native';
  const janitor = new Janitor();
  janitor.installSignalHandlers();
  const say = (s: string) => process.stdout.write(`${s}\n`);
  try {
    const topo = new Topology({ nodes: 3, podsPerNode: 1, podsNow: false, tag: 'ovsoak' });
    janitor.add('namespaces', () => topo.cleanup());
    const etcd = new NsEtcd(topo.underlayNs, '10.99.0.254', path.join(topo.tmp, 'etcd'));
    janitor.add('etcd', () => etcd.stop());
    await etcd.start();
    etcd.ctl(['put', `${PREFIX}/config`, '{"Network":"10.244.0.0/16","Backend":{"Type":"udp"}}']);
    const daemons: DaemonHandle[] = [];
    for (const node of topo.nodes) {
      const file = path.join(topo.tmp, `n${node.index}.env`);
      const d = await startDaemon(node.ns, ['--engine', engine, '--iface', 'eth0', '--etcd-endpoints', etcd.endpoint, '--subnet-file', file]);
      janitor.add(`overlayd ${d.pid}`, async () => { await stopDaemon(d); });
      daemons.push(d);
      topo.addPods(node.index, formatPrefix(parseSubnetFile(readFileSync(file, 'utf8')).subnet));
    }
    const pod = (k: number) => topo.node(k).pods[0]!;
    const seconds = Math.round(minutes * 60);
    say(`soak: ${minutes} min, engine ${engine}, namespaces ${topo.netns.prefix}-*`);

    const children: ChildProcess[] = [];
    const bg = (ns: string, cmd: string, args: string[]) => {
      const c = spawn('ip', ['netns', 'exec', ns, cmd, ...args], { stdio: 'ignore' });
      children.push(c);
      janitor.add(`${cmd} ${c.pid}`, () => { if (c.exitCode === null) c.kill(); });
      return c;
    };
    bg(pod(2).ns, 'iperf3', ['-s', '-B', pod(2).ip]);
    bg(pod(3).ns, 'iperf3', ['-s', '-B', pod(3).ip]);
    await new Promise((r) => setTimeout(r, 500));
    const tcp = bg(pod(1).ns, 'iperf3', ['-c', pod(2).ip, '-t', String(seconds), '-b', '200M']);
    const udp = bg(pod(2).ns, 'iperf3', ['-c', pod(3).ip, '-u', '-b', '20M', '-l', '700', '-t', String(seconds)]);
    const ping = spawn('ip', ['netns', 'exec', pod(3).ns, 'ping', '-n', '-q', '-i', '0.2', '-w', String(seconds), pod(1).ip], { stdio: ['ignore', 'pipe', 'ignore'] });
    let pingOut = '';
    ping.stdout.on('data', (d: Buffer) => { pingOut += d.toString(); });
    janitor.add('ping', () => { if (ping.exitCode === null) ping.kill(); });

    const counters = (k: number): Record<string, number> => {
      const r = topo.netns.tryExec(topo.node(k).ns, OVERLAYD_BIN, ['status', '--json']);
      const c = r.status === 0 ? (JSON.parse(r.stdout) as StatusDoc).counters : null;
      return c ? flatCounters(c) : {};
    };
    const start = [1, 2, 3].map(counters);
    const samples: Sample[] = [];
    const t0 = Date.now();
    let churned = 0;
    let nextSample = t0;
    let nextChurn = t0 + CHURN_EVERY_MS;
    while (Date.now() - t0 < seconds * 1000) {
      const now = Date.now();
      if (now >= nextSample) {
        daemons.forEach((d, i) => {
          const mem = processMemory(d.pid);
          const fds = readdirSync(`/proc/${d.pid}/fd`).length;
          if (mem) samples.push({ tSec: (now - t0) / 1000, node: i + 1, rssMB: mem.rssMB, fds });
        });
        const last = samples.slice(-3).map((s) => `n${s.node} ${s.rssMB.toFixed(1)} MB/${s.fds} fds`).join('  ');
        say(`  t=${Math.round((now - t0) / 1000)}s  ${last}`);
        nextSample += SAMPLE_EVERY_MS;
      }
      if (now >= nextChurn) {
        const key = `${PREFIX}/subnets/10.244.${200 + (churned % 50)}.0-24`;
        if (churned % 2 === 0) etcd.ctl(['put', key, `{"PublicIP":"10.99.1.${1 + (churned % 250)}","PublicIPv6":null}`]);
        else etcd.ctl(['del', `${PREFIX}/subnets/10.244.${200 + ((churned - 1) % 50)}.0-24`]);
        churned++;
        nextChurn += CHURN_EVERY_MS;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    await Promise.all([tcp, udp].map((c) => new Promise((r) => (c.exitCode !== null ? r(0) : c.once('exit', r)))));
    await new Promise((r) => (ping.exitCode !== null ? r(0) : ping.once('exit', r)));
    const end = [1, 2, 3].map(counters);

    say('\nnode  RSS first/last MB  RSS slope MB/h  fds first/last  fd slope /h  unexplained drops');
    const report: Record<string, unknown>[] = [];
    let unexplainedTotal = 0;
    for (const k of [1, 2, 3]) {
      const s = samples.filter((x) => x.node === k);
      const ts = s.map((x) => x.tSec / 3600);
      const rssSlope = slope(ts, s.map((x) => x.rssMB));
      const fdSlope = slope(ts, s.map((x) => x.fds));
      const drops: Record<string, number> = {};
      for (const n of Object.keys(end[k - 1] ?? {})) {
        if (!n.startsWith('drops.') && n !== 'tx_errors') continue;
        const dv = (end[k - 1]![n] ?? 0) - (start[k - 1]![n] ?? 0);
        if (dv !== 0) drops[n] = dv;
      }
      const unexplained = Object.values(drops).reduce((a, b) => a + b, 0);
      unexplainedTotal += unexplained;
      say(`n${k}    ${s[0]?.rssMB.toFixed(1)} / ${s[s.length - 1]?.rssMB.toFixed(1)}        ${rssSlope.toFixed(2).padStart(8)}     ${s[0]?.fds} / ${s[s.length - 1]?.fds}         ${fdSlope.toFixed(2).padStart(6)}     ${unexplained === 0 ? 'none' : JSON.stringify(drops)}`);
      report.push({ node: k, samples: s, rssSlopeMBPerHour: rssSlope, fdSlopePerHour: fdSlope, drops });
    }
    say(`route churn: ${churned} lease writes; ping: ${/(\d+) packets transmitted, (\d+) received[^\n]*/.exec(pingOut)?.[0] ?? 'no summary'}`);
    say(unexplainedTotal === 0 ? 'zero unexplained drops' : `UNEXPLAINED DROPS: ${unexplainedTotal}`);
    if (values.json) writeFileSync(values.json, JSON.stringify({ schema: 'overlayd-soak/1', minutes, engine, churned, ping: pingOut.trim().split('\n').slice(-2), nodes: report }, null, 2));
    return unexplainedTotal === 0 ? 0 : 1;
  } finally {
    await janitor.runAll();
  }
}

main().then((code) => process.exit(code), (err: unknown) => {
  process.stderr.write(`soak: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});
