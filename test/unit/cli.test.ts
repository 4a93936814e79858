/**
 * The built command, spawned: exit codes and stderr lines of help and usage errors. Nothing
 * here starts the daemon (every case stops at parsing), so no root and no network.
 */
import t from 'tap';
import type { Test } from 'tap';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';

const BIN = path.resolve(__dirname, '..', '..', '..', 'bin', 'overlayd');

function run(args: string[], env: NodeJS.ProcessEnv = {}): { code: number | null; stdout: string; stderr: string } {
  const clean: NodeJS.ProcessEnv = { PATH: process.env['PATH'] ?? '/usr/bin:/bin', ...env };
  const r = spawnSync(process.execPath, [BIN, ...args], { encoding: 'utf8', env: clean, timeout: 60_000 });
  if (r.error) throw r.error;
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** One line on stderr, starting with "overlayd", and no stack trace. */
function oneLine(t: Test, stderr: string, re: RegExp, what: string): void {
  const lines = stderr.split('\n').filter((l) => l !== '');
  t.equal(lines.length, 1, `${what}: one stderr line (${JSON.stringify(stderr)})`);
  t.match(lines[0] ?? '', re, what);
  t.notMatch(stderr, /^\s+at /m, `${what}: no stack trace`);
}

t.test('help: --help, -h, -help, help, for the daemon and for status', async (t) => {
  for (const args of [['--help'], ['-h'], ['-help'], ['help'], ['--h']]) {
    const r = run(args);
    t.equal(r.code, 0, args.join(' '));
    t.match(r.stdout, /^usage: overlayd \[flags\]/, args.join(' '));
    t.match(r.stdout, /--etcd-endpoints VALUE  \[flanneld\]/);
    t.equal(r.stderr, '');
  }
  for (const args of [['status', '--help'], ['status', '-h'], ['status', '-help']]) {
    const r = run(args);
    t.equal(r.code, 0, args.join(' '));
    t.match(r.stdout, /^usage: overlayd status \[--json\]/, args.join(' '));
    t.equal(r.stderr, '');
  }
  const v = run(['version']);
  t.equal(v.code, 0);
  t.match(v.stdout, /^overlayd \d+\.\d+\.\d+\n$/);
  t.equal(run(['-version']).stdout, v.stdout);
});

t.test('usage errors: one line on stderr, exit 2, no stack trace', async (t) => {
  const cases: [string[], RegExp, NodeJS.ProcessEnv?][] = [
    [['status', '--bogus'], /^overlayd: unknown flag --bogus \(see overlayd status --help\)$/],
    [['status', 'extra'], /^overlayd: unexpected argument "extra" \(see overlayd status --help\)$/],
    [['status', '--metrics-addr'], /^overlayd: --metrics-addr needs a value/],
    [['status', '--metrics-addr', 'nope'], /^overlayd: --metrics-addr: "nope" is not host:port$/],
    [['status', '--json=maybe'], /^overlayd: --json: "maybe" is not a boolean/],
    [['--bogus'], /^overlayd: unknown flag --bogus \(see overlayd --help\)$/],
    [['-etcd-endpoint=http://10.0.0.1:2379'], /^overlayd: unknown flag --etcd-endpoint: did you mean --etcd-endpoints\?/],
    [['frobnicate'], /^overlayd: unknown command "frobnicate"/],
    [['help', 'me'], /^overlayd: help: unexpected argument "me"/],
    [['--kube-subnet-mgr'], /^overlayd: --kube-subnet-mgr is not supported: overlayd has no Kubernetes subnet manager/],
    [['-kubeconfig-file', '/etc/k.conf'], /^overlayd: --kubeconfig-file is not supported: only used by flanneld's --kube-subnet-mgr/],
    [[], /^overlayd: FLANNELD_KUBE_SUBNET_MGR \(--kube-subnet-mgr\) is not supported/, { FLANNELD_KUBE_SUBNET_MGR: 'true' }],
    [['--subnet-lease-ttl', '30d'], /^overlayd: --subnet-lease-ttl: 30d is out of range: 10s\.\.24d$/],
    [['-ip-masq', 'true'], /^overlayd: unexpected argument "true"; -ip-masq is a boolean flag: write -ip-masq=true/],
    [[], /^overlayd: --engine \(OVERLAYD_ENGINE\): |^overlayd: --engine: "turbo"/, { OVERLAYD_ENGINE: 'turbo' }],
  ];
  for (const [args, re, env] of cases) {
    const r = run(args, env);
    const what = `${Object.entries(env ?? {}).map(([k, v]) => `${k}=${v} `).join('')}overlayd ${args.join(' ')}`;
    t.equal(r.code, 2, `${what}: exit 2`);
    oneLine(t, r.stderr, re, what);
    t.equal(r.stdout, '', `${what}: nothing on stdout`);
  }
});

t.test('status with OVERLAYD_METRICS_ADDR= (empty, as the env file documents) is no usage error', async (t) => {
  // a daemon of this namespace may or may not answer on its status socket: 0 or 1 (answered), 3 (none), never 2
  const r = run(['status'], { OVERLAYD_METRICS_ADDR: '' });
  t.not(r.code, 2, 'not a usage error');
  t.ok(r.code === 0 || r.code === 1 || r.code === 3, `answered (0, 1) or no daemon (3): ${r.code}`);
  if (r.code === 3) oneLine(t, r.stderr, /^overlayd status: no overlayd daemon answers on its status socket in this network namespace/, 'no daemon');
});
