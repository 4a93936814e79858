/**
 * A real etcd (Debian's etcd-server, /usr/bin/etcd) for integration tests: one member or a
 * 3-member cluster on free 127.0.0.1 ports, its own temp data directory, optional TLS with
 * client certificates generated here with openssl. Every process started here is stopped
 * by pid (t.teardown, and a last-resort SIGKILL on process exit); nothing listens beyond
 * loopback.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import * as http from 'node:http';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import type { Etcd3 } from 'etcd3';
import pino from 'pino';
import { createEtcdClient, type EtcdOptions } from '../../src/control/etcd-client';
import type { Route } from '../../src/dataplane/types';
import { formatIp, formatPrefix, type Prefix } from '../../src/net/addr';
import type { Logger } from '../../src/ops/log';
import { must } from './exec';

export const ETCD_BIN = process.env['OVERLAYD_TEST_ETCD'] ?? '/usr/bin/etcd';

/** Every etcd child alive in this process, killed if the process exits with them running. */
const live = new Set<ChildProcess>();
process.on('exit', () => {
  for (const c of live) {
    try {
      if (c.pid !== undefined) process.kill(c.pid, 'SIGKILL');
    } catch {
      // already gone
    }
  }
});

/** A port that was free a moment ago on 127.0.0.1 (bind port 0, read it, close). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => (port ? resolve(port) : reject(new Error('no port'))));
    });
  });
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** true when `exited` settles within ms (the timer does not hold the process open). */
function exitedWithin(exited: Promise<void>, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    timer.unref();
    void exited.then(() => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

export interface TlsFiles {
  readonly dir: string;
  readonly caFile: string;
  readonly serverCert: string;
  readonly serverKey: string;
  readonly clientCert: string;
  readonly clientKey: string;
  /** a CA that did not sign the server certificate */
  readonly otherCaFile: string;
}

/** A CA, a server certificate for IP 127.0.0.1 and a client certificate, made with openssl. */
export function makeTlsFiles(dir: string): TlsFiles {
  const f = (n: string) => path.join(dir, n);
  const key = (name: string) => must('openssl', ['genpkey', '-algorithm', 'EC', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-out', f(name)]);
  const ca = (name: string, cn: string) => {
    key(`${name}.key`);
    must('openssl', ['req', '-x509', '-new', '-key', f(`${name}.key`), '-out', f(`${name}.crt`), '-days', '2', '-subj', `/CN=${cn}`]);
  };
  ca('ca', 'overlayd-test-ca');
  ca('other-ca', 'overlayd-other-ca');
  const leaf = (name: string, cn: string, ext: string) => {
    key(`${name}.key`);
    must('openssl', ['req', '-new', '-key', f(`${name}.key`), '-out', f(`${name}.csr`), '-subj', `/CN=${cn}`]);
    writeFileSync(f(`${name}.ext`), ext);
    must('openssl', [
      'x509', '-req', '-in', f(`${name}.csr`), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial',
      '-out', f(`${name}.crt`), '-days', '2', '-extfile', f(`${name}.ext`),
    ]);
  };
  leaf('server', '127.0.0.1', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n');
  leaf('client', 'overlayd-test-client', 'extendedKeyUsage=clientAuth\nkeyUsage=digitalSignature,keyEncipherment\n');
  return {
    dir,
    caFile: f('ca.crt'),
    serverCert: f('server.crt'),
    serverKey: f('server.key'),
    clientCert: f('client.crt'),
    clientKey: f('client.key'),
    otherCaFile: f('other-ca.crt'),
  };
}

interface Member {
  readonly name: string;
  readonly dataDir: string;
  clientPort: number;
  peerPort: number;
  metricsPort: number;
  proc?: ChildProcess;
  exited?: Promise<void>;
  log: string;
}

export interface StartEtcdOptions {
  /** 1 (default) or 3 members */
  members?: 1 | 3;
  /** serve clients over TLS and require client certificates */
  tls?: boolean;
  /** bound on waiting for health, ms (default 60000: generous for a loaded machine) */
  healthTimeoutMs?: number;
}

/** Minimal view of tap's Test used here (teardown registration). */
export interface TeardownHost {
  teardown(fn: () => unknown): void;
}

export class EtcdCluster {
  readonly root: string;
  readonly tls?: TlsFiles;
  private readonly members: Member[];
  private readonly token = `ovt-${randomBytes(4).toString('hex')}`;
  private readonly clients: Etcd3[] = [];
  private readonly healthTimeoutMs: number;
  private stopped = false;

  private constructor(root: string, n: number, tlsFiles: TlsFiles | undefined, healthTimeoutMs: number) {
    this.root = root;
    if (tlsFiles) this.tls = tlsFiles;
    this.healthTimeoutMs = healthTimeoutMs;
    this.members = Array.from({ length: n }, (_, i) => ({
      name: `m${i}`,
      dataDir: path.join(root, `m${i}`),
      clientPort: 0,
      peerPort: 0,
      metricsPort: 0,
      log: '',
    }));
  }

  /** Starts etcd; registers its stop on `t` when given. */
  static async start(t: TeardownHost | undefined, opts: StartEtcdOptions = {}): Promise<EtcdCluster> {
    const base = existsSync('/dev/shm') ? '/dev/shm' : os.tmpdir(); // tmpfs: fsync is free
    const root = mkdtempSync(path.join(base, 'overlayd-etcd-'));
    const tlsFiles = opts.tls ? makeTlsFiles(mkdtempSync(path.join(root, 'tls-'))) : undefined;
    const c = new EtcdCluster(root, opts.members ?? 1, tlsFiles, opts.healthTimeoutMs ?? 60_000);
    t?.teardown(() => c.stop());
    // pick ports, start; a port taken between our probe and etcd's bind: new ports, again
    let lastErr: unknown;
    for (let attempt = 0; attempt < 5; attempt++) {
      for (const m of c.members) {
        m.clientPort = await freePort();
        m.peerPort = await freePort();
        m.metricsPort = await freePort();
      }
      try {
        await Promise.all(c.members.map((_, i) => c.spawnMember(i, 'new')));
        await Promise.all(c.members.map((_, i) => c.waitHealthy(i)));
        return c;
      } catch (err) {
        lastErr = err;
        await Promise.all(c.members.map((_, i) => c.stopMember(i, 'SIGKILL')));
        for (const m of c.members) rmSync(m.dataDir, { recursive: true, force: true });
        if (!/address already in use/i.test(String(err))) break;
      }
    }
    await c.stop();
    throw lastErr instanceof Error ? lastErr : new Error(String(lastErr));
  }

  get size(): number {
    return this.members.length;
  }

  private scheme(): string {
    return this.tls ? 'https' : 'http';
  }

  clientUrl(i: number): string {
    return `${this.scheme()}://127.0.0.1:${this.member(i).clientPort}`;
  }

  /** Every member's client URL. */
  get endpoints(): string[] {
    return this.members.map((_, i) => this.clientUrl(i));
  }

  /** EtcdOptions for these endpoints (with the client certificate when TLS is on). */
  etcdOptions(prefix = '/coreos.com/network', extra: Partial<EtcdOptions> = {}): EtcdOptions {
    const o: EtcdOptions = { endpoints: this.endpoints, prefix };
    if (this.tls) Object.assign(o, { cafile: this.tls.caFile, certfile: this.tls.clientCert, keyfile: this.tls.clientKey });
    return { ...o, ...extra };
  }

  /** A client for test manipulation (closed by stop()). */
  async client(endpoints?: string[]): Promise<Etcd3> {
    const c = await createEtcdClient({ ...this.etcdOptions(), ...(endpoints ? { endpoints } : {}) });
    this.clients.push(c);
    return c;
  }

  pid(i: number): number | undefined {
    return this.member(i).proc?.pid;
  }

  running(i: number): boolean {
    return this.member(i).proc !== undefined;
  }

  log(i = 0): string {
    return this.member(i).log;
  }

  private member(i: number): Member {
    const m = this.members[i];
    if (!m) throw new Error(`no etcd member ${i}`);
    return m;
  }

  private args(i: number, state: 'new' | 'existing'): string[] {
    const m = this.member(i);
    const client = this.clientUrl(i);
    const peer = `http://127.0.0.1:${m.peerPort}`;
    const cluster = this.members.map((x) => `${x.name}=http://127.0.0.1:${x.peerPort}`).join(',');
    const a = [
      '--name', m.name,
      '--data-dir', m.dataDir,
      '--listen-client-urls', client,
      '--advertise-client-urls', client,
      '--listen-peer-urls', peer,
      '--initial-advertise-peer-urls', peer,
      '--listen-metrics-urls', `http://127.0.0.1:${m.metricsPort}`,
      '--initial-cluster', cluster,
      '--initial-cluster-state', state,
      '--initial-cluster-token', this.token,
      '--heartbeat-interval', '50',
      '--election-timeout', '500',
      '--logger', 'zap',
      '--log-outputs', 'stderr',
      '--log-level', 'warn',
    ];
    if (this.tls) {
      a.push('--cert-file', this.tls.serverCert, '--key-file', this.tls.serverKey, '--trusted-ca-file', this.tls.caFile, '--client-cert-auth');
    }
    return a;
  }

  private async spawnMember(i: number, state: 'new' | 'existing'): Promise<void> {
    const m = this.member(i);
    if (m.proc) throw new Error(`etcd member ${i} is already running`);
    const proc = spawn(ETCD_BIN, this.args(i, state), { stdio: ['ignore', 'ignore', 'pipe'] });
    live.add(proc);
    m.proc = proc;
    m.exited = new Promise<void>((resolve) => {
      proc.once('exit', () => {
        live.delete(proc);
        if (m.proc === proc) delete m.proc;
        resolve();
      });
    });
    proc.stderr?.setEncoding('utf8');
    proc.stderr?.on('data', (d: string) => {
      m.log = (m.log + d).slice(-20_000);
    });
    await new Promise<void>((resolve, reject) => {
      proc.once('spawn', () => resolve());
      proc.once('error', reject);
    });
  }

  private health(i: number): Promise<boolean> {
    const m = this.member(i);
    return new Promise((resolve) => {
      const req = http.get({ host: '127.0.0.1', port: m.metricsPort, path: '/health', timeout: 1000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => resolve(res.statusCode === 200 && /"health":\s*"true"/.test(body)));
      });
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(false));
    });
  }

  /** A gauge from member i's /metrics (e.g. etcd_debugging_mvcc_watcher_total); NaN if unreadable. */
  metric(i: number, name: string): Promise<number> {
    const m = this.member(i);
    return new Promise((resolve) => {
      const req = http.get({ host: '127.0.0.1', port: m.metricsPort, path: '/metrics', timeout: 2000 }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => {
          const line = body.split('\n').find((l) => l.startsWith(`${name} `));
          resolve(line ? Number(line.slice(name.length + 1)) : NaN);
        });
      });
      req.on('timeout', () => req.destroy());
      req.on('error', () => resolve(NaN));
    });
  }

  /** Waits (bounded) until member i reports healthy (it has a leader). */
  async waitHealthy(i: number, timeoutMs = this.healthTimeoutMs): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const m = this.member(i);
      if (!m.proc) throw new Error(`etcd member ${i} exited during startup:\n${m.log.slice(-3000)}`);
      if (await this.health(i)) return;
      await sleep(100);
    }
    throw new Error(`etcd member ${i} not healthy within ${timeoutMs} ms:\n${this.member(i).log.slice(-3000)}`);
  }

  /** Stops member i by pid: `signal` (SIGTERM by default), SIGKILL after 5 s. */
  async stopMember(i: number, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const m = this.member(i);
    const proc = m.proc;
    if (!proc || proc.pid === undefined) return;
    const exited = m.exited ?? Promise.resolve();
    try {
      process.kill(proc.pid, signal);
    } catch {
      // already gone
    }
    if (!(await exitedWithin(exited, 5000))) {
      try {
        process.kill(proc.pid, 'SIGKILL');
      } catch {
        // gone
      }
      await exitedWithin(exited, 5000);
    }
  }

  /** SIGKILL member i (a crash). */
  killMember(i: number): Promise<void> {
    return this.stopMember(i, 'SIGKILL');
  }

  /** Starts member i again on its data directory and ports; waits until healthy. */
  async startMember(i: number, waitHealthy = true): Promise<void> {
    await this.spawnMember(i, 'existing');
    if (waitHealthy) await this.waitHealthy(i);
  }

  /** Stops every member (data kept). */
  async stopAll(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    await Promise.all(this.members.map((_, i) => this.stopMember(i, signal)));
  }

  /** Starts every stopped member again and waits until all are healthy. */
  async startAll(): Promise<void> {
    const stopped = this.members.map((m, i) => (m.proc ? -1 : i)).filter((i) => i >= 0);
    await Promise.all(stopped.map((i) => this.spawnMember(i, 'existing')));
    await Promise.all(stopped.map((i) => this.waitHealthy(i)));
  }

  /** Stop and start again (same data, same ports). */
  async restart(): Promise<void> {
    await this.stopAll();
    await this.startAll();
  }

  private adminClient?: Etcd3;

  /** One shared client for the helpers below (and for tests' own reads and writes). */
  async admin(): Promise<Etcd3> {
    this.adminClient ??= await this.client();
    return this.adminClient;
  }

  /** The current store revision. */
  async revision(): Promise<number> {
    const c = await this.admin();
    const r = await c.get('/__overlayd_test_revision_probe').exec();
    return Number(r.header.revision);
  }

  /** Compacts the history up to `revision` (default: the current revision), physically. */
  async compact(revision?: number): Promise<number> {
    const c = await this.admin();
    const rev = revision ?? Number((await c.get('/__overlayd_test_revision_probe').exec()).header.revision);
    await c.kv.compact({ revision: String(rev), physical: true });
    return rev;
  }

  /** Every key (and value) under a prefix, for "nothing written" checks. */
  async dump(prefix = '/'): Promise<Record<string, string>> {
    const c = await this.admin();
    return c.getAll().prefix(prefix).strings();
  }

  /** Enables etcd's password auth with a root user (etcdctl, as an operator would). */
  enableAuth(password: string): void {
    const ep = ['--endpoints', this.endpoints.join(',')];
    const tlsArgs = this.tls ? ['--cacert', this.tls.caFile, '--cert', this.tls.clientCert, '--key', this.tls.clientKey] : [];
    const env = { ...process.env, ETCDCTL_API: '3' };
    must('etcdctl', [...ep, ...tlsArgs, 'user', 'add', `root:${password}`], { env });
    must('etcdctl', [...ep, ...tlsArgs, 'auth', 'enable'], { env });
  }

  /** Stops everything, closes test clients, removes the data directory. Idempotent. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    for (const c of this.clients.splice(0)) c.close();
    await this.stopAll('SIGTERM');
    rmSync(this.root, { recursive: true, force: true });
  }
}

/** Starts etcd for test `t` (stopped in t.teardown). */
export function startEtcd(t: TeardownHost, opts: StartEtcdOptions = {}): Promise<EtcdCluster> {
  return EtcdCluster.start(t, opts);
}

// ---------------------------------------------------------------------------------------
// Helpers for control-plane tests against this etcd (route sinks, logs, waiting).

/** A RouteSink that records every call (with a timestamp) and the resulting table. */
export class RecordingSink {
  readonly calls: Array<{ op: 'upsert' | 'remove'; subnet: string; publicIp?: string; at: number }> = [];
  readonly table = new Map<string, string>();
  upsert(r: Route): void {
    const subnet = formatPrefix(r.subnet);
    this.calls.push({ op: 'upsert', subnet, publicIp: formatIp(r.publicIp), at: Date.now() });
    this.table.set(subnet, formatIp(r.publicIp));
  }
  remove(s: Prefix): void {
    const subnet = formatPrefix(s);
    this.calls.push({ op: 'remove', subnet, at: Date.now() });
    this.table.delete(subnet);
  }
  /** "subnet>ip" lines, sorted */
  snapshot(): string[] {
    return [...this.table].map(([s, ip]) => `${s}>${ip}`).sort();
  }
  callsFor(subnet: string) {
    return this.calls.filter((c) => c.subnet === subnet);
  }
}

/** A pino logger that keeps every line (parsed) in memory. */
export function memoryLogger(level: 'debug' | 'info' | 'warn' = 'info'): { logger: Logger; lines: Array<Record<string, unknown>>; msgs(): string[] } {
  const lines: Array<Record<string, unknown>> = [];
  const logger = pino({ level }, {
    write(s: string) {
      try {
        lines.push(JSON.parse(s) as Record<string, unknown>);
      } catch {
        lines.push({ msg: s });
      }
    },
  });
  return { logger, lines, msgs: () => lines.map((l) => String(l['msg'])) };
}

/**
 * A loaded 2-core CI machine can stall any step for seconds: no wait gives up sooner than this
 * (ms), whatever the caller's timeoutMs says. A step that is only slow then passes; one that
 * never happens still fails.
 */
export const WAIT_FLOOR_MS = 30_000;

/**
 * Polls `cond` every `everyMs` until true; resolves the ms it took (a diagnostic, never assert
 * on it). `timeoutMs` is how long the step normally takes at most; it throws after
 * max(timeoutMs, WAIT_FLOOR_MS).
 */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 5000, everyMs = 25): Promise<number> {
  const t0 = Date.now();
  const bound = Math.max(timeoutMs, WAIT_FLOOR_MS);
  for (;;) {
    if (await cond()) return Date.now() - t0;
    if (Date.now() - t0 > bound) throw new Error(`timed out after ${bound} ms waiting for ${what}`);
    await sleep(everyMs);
  }
}

export { sleep };

/** flannel's lease value for a PublicIP (what flanneld and overlayd write). */
export function flannelLeaseValue(publicIp: string): string {
  return `{"PublicIP":"${publicIp}","PublicIPv6":null}`;
}
