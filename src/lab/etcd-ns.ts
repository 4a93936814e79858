/**
 * A single-member etcd server running inside a lab network namespace (the demo's and the
 * e2e tests' underlay namespace), with its own data directory. Started and stopped by pid.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { run } from './exec';

export class NsEtcd {
  private child: ChildProcess | undefined;
  private log = '';
  readonly endpoint: string;

  constructor(readonly ns: string, readonly ip: string, readonly dataDir: string, readonly port = 2379) {
    this.endpoint = `http://${ip}:${port}`;
  }

  /** Starts etcd and waits (bounded) until `etcdctl endpoint health` succeeds. */
  async start(timeoutMs = 60_000): Promise<void> {
    mkdirSync(this.dataDir, { recursive: true });
    this.child = spawn('ip', ['netns', 'exec', this.ns, 'etcd',
      '--name', 'lab', '--data-dir', this.dataDir,
      '--listen-client-urls', this.endpoint, '--advertise-client-urls', this.endpoint,
      '--listen-peer-urls', 'http://127.0.0.1:2380', '--initial-advertise-peer-urls', 'http://127.0.0.1:2380',
      '--initial-cluster', 'lab=http://127.0.0.1:2380', '--log-level', 'warn'], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child.stdout?.on('data', (d: Buffer) => { this.log += d.toString(); });
    this.child.stderr?.on('data', (d: Buffer) => { this.log += d.toString(); });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.child.exitCode !== null) throw new Error(`etcd exited: ${this.log.slice(-2000)}`);
      if (this.ctl(['endpoint', 'health']).status === 0) return;
      if (Date.now() > deadline) throw new Error(`etcd not healthy within ${timeoutMs} ms: ${this.log.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }

  /** Runs etcdctl (v3 API) against this server from inside its namespace. */
  ctl(args: readonly string[]) {
    return run('ip', ['netns', 'exec', this.ns, 'etcdctl', `--endpoints=${this.endpoint}`, ...args], {
      timeoutMs: 10_000, env: { ...process.env, ETCDCTL_API: '3' },
    });
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** SIGTERM by pid, then SIGKILL after the bound; resolves when it has exited. */
  async stop(timeoutMs = 5000): Promise<void> {
    const c = this.child;
    this.child = undefined;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    c.kill('SIGTERM');
    const timer = setTimeout(() => c.kill('SIGKILL'), timeoutMs);
    await exited;
    clearTimeout(timer);
  }
}
