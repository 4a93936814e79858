/**
 * TUN GRO with the longest TCP headers (root only): a pod sends a one-way TCP stream whose
 * every segment carries 40 bytes of TCP options (timestamps + 3 SACK blocks; crafted with a
 * raw socket by fixtures/raw-tcp.py, which needs no handshake), through the overlay to a pod
 * on the other node, whose daemon coalesces them into super-packets written into its TUN
 * (issue 10: a 60-byte header buffer overflowed there). The daemons run the ASan+UBSan build
 * of the addon (native/test: make addon-asan) with libasan preloaded; any sanitizer report
 * fails the test. The stream is reassembled by sequence number in the receiving pod and its
 * sha256 compared; node 2 must have written coalesced super-packets. The same stream with
 * node 2 on the js engine (no GRO) is the reference.
 */
import t from 'tap';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { isRoot, run } from '../helpers/exec';
import { Topology, startDaemon, stopDaemon, OVERLAYD_BIN, type DaemonHandle } from '../helpers/topology';
import { flatCounters, type StatusDoc } from '../../src/ops/status-types';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const RAW_TCP = path.join(ROOT, 'test', 'e2e', 'fixtures', 'raw-tcp.py');
const ASAN_ADDON = path.join(ROOT, 'native', 'test', 'bin', 'asan', 'overlayd.node');
const BYTES = 2 * 1024 * 1024;


if (!isRoot) {
  t.skip('SKIP: e2e GRO options test needs root (network namespaces, TUN devices, raw sockets)', () => undefined);
} else {
  const build = spawnSync('make', ['-s', '-C', path.join(ROOT, 'native', 'test'), 'addon-asan'], { encoding: 'utf8', timeout: 300_000 });
  const libasan = spawnSync('cc', ['-print-file-name=libasan.so'], { encoding: 'utf8' }).stdout.trim();
  t.equal(build.status, 0, `make addon-asan: ${build.stderr}`);
  t.ok(existsSync(ASAN_ADDON) && existsSync(libasan), `ASan addon ${ASAN_ADDON} and ${libasan}`);
  const logDir = mkdtempSync(path.join(tmpdir(), 'overlayd-gro-asan-'));
  /** the daemons' environment: sanitizer reports go to dir */
  const asanEnv = (dir: string): NodeJS.ProcessEnv => ({
    ...process.env, LD_PRELOAD: libasan, OVERLAYD_ADDON: ASAN_ADDON,
    ASAN_OPTIONS: `detect_leaks=0:abort_on_error=1:log_path=${dir}/asan`,
    UBSAN_OPTIONS: `halt_on_error=1:print_stacktrace=1:log_path=${dir}/ubsan`,
  });
  const topo = new Topology({ nodes: 2, podsPerNode: 1 });
  t.teardown(() => { topo.cleanup(); rmSync(logDir, { recursive: true, force: true }); });
  const [n1, n2] = [topo.node(1), topo.node(2)];
  const [p1, p2] = [n1.pods[0]!, n2.pods[0]!];
  const statusOf = (ns: string): StatusDoc => JSON.parse(topo.netns.exec(ns, process.execPath, [OVERLAYD_BIN, 'status', '--json'], 10_000)) as StatusDoc;

  let dport = 6100;
  for (const engine2 of ['native', 'js'] as const) {
    t.test(`40 option bytes on every segment, node 2 ${engine2} engine${engine2 === 'native' ? ' (GRO on)' : ''}`, async (t) => {
      const daemons: DaemonHandle[] = [];
      const reportDir = mkdtempSync(path.join(logDir, `${engine2}-`));
      const env = asanEnv(reportDir);
      t.teardown(async () => { for (const d of daemons) await stopDaemon(d); });
      const common = ['--iface', 'eth0'];
      daemons.push(await startDaemon(n1.ns, [...common, '--static-config', topo.staticConfig(1), '--subnet-file', path.join(topo.tmp, 'n1.env')], 60_000, env));
      daemons.push(await startDaemon(n2.ns, [...common, '--engine', engine2, '--static-config', topo.staticConfig(2), '--subnet-file', path.join(topo.tmp, 'n2.env')], 60_000, env));
      const port = dport++;
      const recv = spawn('ip', ['netns', 'exec', p2.ns, 'python3', RAW_TCP, 'recv', String(port), String(BYTES), '120'], { stdio: ['ignore', 'pipe', 'pipe'] });
      let out = '';
      let err = '';
      recv.stdout.on('data', (d: Buffer) => { out += d.toString(); });
      const done = new Promise<number | null>((resolve) => recv.on('exit', (c) => resolve(c)));
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => { recv.kill('SIGKILL'); reject(new Error(`raw-tcp recv did not listen: ${err}`)); }, 20_000);
        recv.stderr.on('data', (d: Buffer) => { err += d.toString(); if (err.includes('listening')) { clearTimeout(timer); resolve(); } });
      });
      const send = topo.netns.tryExec(p1.ns, 'python3', [RAW_TCP, 'send', p1.ip, p2.ip, '40000', String(port), String(BYTES), '3'], 120_000);
      t.equal(send.status, 0, `raw-tcp send: ${send.stderr}`);
      const code = await done;
      const [sentN, sentHash] = send.stdout.trim().split(' ');
      const [gotN, gotHash, packets, maxPayload] = out.trim().split(' ');
      t.equal(code, 0, `receiver complete: ${err.replace('listening\n', '')}`);
      t.equal(Number(gotN), BYTES, `${BYTES} bytes reassembled`);
      t.equal(gotHash, sentHash, `sha256 of the received stream equals the sent one (${sentN} bytes, ${packets} packets seen, largest payload ${maxPayload})`);
      const s2 = statusOf(n2.ns);
      t.equal(s2.counters ? flatCounters(s2.counters)['drops.malformed'] : undefined, 0, 'node 2: nothing malformed');
      if (engine2 === 'native') t.ok((s2.offloads?.activity.tun_gro_writes ?? 0) > 0, `node 2 wrote coalesced super-packets (${s2.offloads?.activity.tun_gro_writes})`);
      for (const d of daemons.splice(0)) await stopDaemon(d);
      const reports = readdirSync(reportDir);
      t.same(reports, [], `no sanitizer report${reports.length ? `: ${reports.map((f) => readFileSync(path.join(reportDir, f), 'utf8')).join('\n')}` : ''}`);
    });
  }
  t.test('no namespace left behind', async (t) => {
    topo.cleanup();
    const names = run('ip', ['netns', 'list']).stdout.split('\n').map((l) => l.split(' ')[0] ?? '');
    t.same(names.filter((n) => n.startsWith(`${topo.netns.prefix}-`)), [], `none of ${topo.netns.prefix}-*`);
  });
}
