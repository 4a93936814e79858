/**
 * `npm run bench` (never part of `npm test`): the micro-benchmarks, then the two-node
 * benchmark (root), a table of each, ratios to kernel VXLAN and the issue's targets with
 * PASS/MISS; `--json FILE` writes everything as JSON. See bench/README.md.
 *
 *   npm run bench -- [--only micro|two-node] [--rounds N] [--seconds S] [--ipv6 on|off]
 *                    [--engines vxlan,vxlan6,direct-routing,native,native-pc,native-q2,native-nooff,js] [--micro-time S] [--json FILE]
 *                    [--html FILE]
 */
import { parseArgs } from 'node:util';
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import * as path from 'node:path';
import * as os from 'node:os';
import { Topology } from '../src/lab/topology';
import { isRoot, run } from '../src/lab/exec';
import { Janitor } from './janitor';
import { ALL_SETUPS, parseSetups, probeSetup } from './engines';
import { ROOT, runMicro, type MicroResults } from './micro';
import { runTwoNode, type TwoNodeResults } from './two-node';
import { checkTargets, computeRatios, formatMicro, formatTwoNode, type Ratios, type TargetCheck } from './report';
import { renderHtml } from './html';

const USAGE = `usage: npm run bench -- [options]
  --only micro|two-node   run one part (default: both)
  --rounds N              two-node rounds, the median is reported (default 3, 1..20)
  --seconds S             seconds per iperf3 run (default 5, 1..60)
  --engines LIST          two-node setups, comma-separated from ${ALL_SETUPS.join(',')} (default all;
                          an overlayd engine the daemon does not accept is skipped with the reason)
  --ipv6 on|off           two-node dual-stack (default on): IPv6 underlay beside IPv4, pods with v6
                          addresses, dual-stack daemons; adds TCP 1 stream over IPv6 per setup
                          and the vxlan6 setup (kernel VXLAN over the IPv6 underlay)
  --micro-time S          benchmark.js time per micro-benchmark, seconds (default 1)
  --json FILE             also write the results as JSON
  --html FILE             also write the results as one self-contained HTML page of bar charts
  --help`;

export interface BenchJson {
  readonly schema: 'overlayd-bench/1';
  readonly meta: Record<string, unknown>;
  readonly micro?: MicroResults;
  readonly twoNode?: TwoNodeResults & { ratios: Ratios; targets: TargetCheck[] };
  readonly notRun?: Record<string, string>;
}

/**
 * Every overlayd of the run (and the TUN micro-benchmark) loads one copy of the addon, taken
 * at the start: `npm run build:native` elsewhere during the run (it deletes build/ first)
 * cannot break or change it half-way, so all setups are measured with the same build. A
 * user's OVERLAYD_ADDON is respected as is.
 */
async function snapshotAddon(dir: string): Promise<{ source: string; sha256?: string; note: string }> {
  const given = process.env['OVERLAYD_ADDON'];
  if (given) return { source: given, ...(existsSync(given) ? { sha256: sha256(given) } : {}), note: 'OVERLAYD_ADDON from the environment' };
  const built = path.join(ROOT, 'build', 'Release', 'overlayd.node');
  // bounded wait: a concurrent rebuild removes the file for a while
  for (let i = 0; i < 60 && !existsSync(built); i++) await new Promise((r) => setTimeout(r, 500));
  if (!existsSync(built)) return { source: built, note: 'missing (run npm run build:native); overlayd setups will fail' };
  const copy = path.join(dir, 'overlayd.node');
  copyFileSync(built, copy);
  process.env['OVERLAYD_ADDON'] = copy; // inherited by the daemons and the micro child
  return { source: built, sha256: sha256(copy), note: `copied to ${copy} for the run` };
}

function sha256(file: string): string {
  return createHash('sha256').update(readFileSync(file)).digest('hex');
}

function intArg(name: string, v: string | undefined, def: number, min: number, max: number): number {
  if (v === undefined) return def;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min || n > max) throw new Error(`--${name}: ${v} is not in ${min}..${max}`);
  return n;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      'only': { type: 'string' }, 'rounds': { type: 'string' }, 'seconds': { type: 'string' },
      'engines': { type: 'string' }, 'micro-time': { type: 'string' }, 'ipv6': { type: 'string' }, 'json': { type: 'string' }, 'html': { type: 'string' }, 'help': { type: 'boolean' },
    },
    strict: true,
  });
  if (values.help) {
    console.log(USAGE);
    return 0;
  }
  const only = values.only;
  if (only !== undefined && only !== 'micro' && only !== 'two-node') throw new Error(`--only: "${only}" is not micro or two-node`);
  const rounds = Math.round(intArg('rounds', values.rounds, 3, 1, 20));
  const seconds = Math.round(intArg('seconds', values.seconds, 5, 1, 60));
  const microTime = intArg('micro-time', values['micro-time'], 1, 0.1, 10);
  const setups = parseSetups(values.engines ?? ALL_SETUPS.join(','));
  if (values.ipv6 !== undefined && values.ipv6 !== 'on' && values.ipv6 !== 'off') throw new Error(`--ipv6: "${values.ipv6}" is not on or off`);
  const ipv6 = values.ipv6 !== 'off';
  const doMicro = only !== 'two-node';
  const doTwoNode = only !== 'micro';

  const t0 = Date.now();
  const log = (line: string) => console.log(line);
  const janitor = new Janitor();
  janitor.installSignalHandlers();
  const cpus = os.cpus();
  const meta: Record<string, unknown> = {
    date: new Date().toISOString(), host: os.hostname(), kernel: os.release(), arch: os.arch(),
    cpus: cpus.length, cpuModel: cpus[0]?.model ?? '?', memGB: Math.round(os.totalmem() / 1e8) / 10,
    node: process.version, iperf3: run('iperf3', ['--version']).stdout.split('\n')[0]?.trim() ?? '?',
    args: { only: only ?? 'all', rounds, seconds, engines: setups, microTime, ipv6 }, root: isRoot,
    // what was measured: the commit, and whether the daemon's sources had uncommitted changes
    git: {
      commit: run('git', ['-C', ROOT, 'rev-parse', '--short', 'HEAD']).stdout.trim() || '?',
      uncommittedFiles: run('git', ['-C', ROOT, 'status', '--porcelain', '--', 'src', 'native', 'binding.gyp']).stdout.split('\n').filter((l) => l.trim() !== '').length,
    },
    // the machine may be shared: the load around the run says how noisy the numbers are
    loadavgStart: os.loadavg().map((x) => Math.round(x * 100) / 100),
  };
  const git = meta['git'] as { commit: string; uncommittedFiles: number };
  log(`overlayd bench ${meta['date']} on ${meta['host']} (${meta['cpus']} x ${meta['cpuModel']}, Linux ${meta['kernel']}, Node ${meta['node']}, ${meta['iperf3']}), load average ${(meta['loadavgStart'] as number[]).join(' ')}`);
  log(`commit ${git.commit}${git.uncommittedFiles > 0 ? ` + ${git.uncommittedFiles} uncommitted file(s) in src/, native/` : ''}`);

  const notRun: Record<string, string> = {};
  let micro: MicroResults | undefined;
  let twoNode: BenchJson['twoNode'];
  let topo: Topology | undefined;
  try {
    if (isRoot) {
      topo = new Topology({ nodes: 2, podsPerNode: 1, tag: 'ovb', ipv6 });
      const t = topo;
      janitor.add(`namespaces ${t.netns.prefix}-*`, () => t.cleanup());
      meta['namespacePrefix'] = topo.netns.prefix;
      log(`namespaces: ${topo.netns.prefix}-* (removed at the end, also on SIGINT)`);
    }
    if (topo) {
      const addon = await snapshotAddon(topo.tmp);
      meta['addon'] = addon;
      log(`addon: ${addon.source}${addon.sha256 ? ` (sha256 ${addon.sha256.slice(0, 16)}, ${addon.note})` : ` (${addon.note})`}`);
    }
    if (doMicro) {
      const tunNs = topo ? { topo, ns: topo.netns.add('tun') } : undefined;
      micro = runMicro({ maxTime: microTime, tunSeconds: 2, ...(tunNs ? { tunNs } : {}), log });
      log('');
      log(formatMicro(micro));
      log('');
    }
    if (doTwoNode) {
      if (!topo) {
        notRun['two-node'] = 'needs root (network namespaces, TUN devices)';
        log(`two-node: SKIPPED: ${notRun['two-node']}`);
      } else {
        const availability = setups.map((setup) => ({ setup, availability: probeSetup(setup, ipv6) }));
        const res = await runTwoNode({ rounds, seconds, setups: availability, topo, janitor, log, ipv6 });
        const ratios = computeRatios(res);
        const targets = checkTargets(res);
        twoNode = { ...res, ratios, targets };
        log('');
        log(`two-node: ${rounds} round(s), ${seconds} s per iperf3 run, pod n1p1 -> pod n2p1, underlay veth MTU 1500${ipv6 ? ', dual-stack (IPv4 and IPv6 underlay and pods)' : ''}`);
        log(formatTwoNode(res, ratios, targets));
      }
    }
  } finally {
    await janitor.runAll();
  }
  meta['durationS'] = Math.round((Date.now() - t0) / 100) / 10;
  meta['loadavgEnd'] = os.loadavg().map((x) => Math.round(x * 100) / 100);
  log('');
  log(`bench finished in ${meta['durationS']} s, load average ${(meta['loadavgEnd'] as number[]).join(' ')}`);
  const doc: BenchJson = { schema: 'overlayd-bench/1', meta, ...(micro ? { micro } : {}), ...(twoNode ? { twoNode } : {}), ...(Object.keys(notRun).length ? { notRun } : {}) };
  if (values.json !== undefined) {
    writeFileSync(values.json, `${JSON.stringify(doc, null, 2)}\n`);
    log(`JSON written to ${values.json}`);
  }
  if (values.html !== undefined) {
    writeFileSync(values.html, renderHtml(doc));
    log(`HTML written to ${values.html}`);
  }
  return 0;
}

main().then(
  (code) => { process.exitCode = code; },
  (err: unknown) => {
    process.stderr.write(`bench: ${err instanceof Error ? err.stack ?? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
