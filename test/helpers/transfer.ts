/**
 * One TCP transfer between two lab pods with fixtures/tcp-xfer.js: the receiver listens in
 * `to`'s namespace (bounded wait until it says so), the sender sends `bytes` pseudo-random
 * bytes; both print "<bytes> <sha256>". Nothing here is timed as an assertion: `ms` is a
 * diagnostic.
 */
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import type { PodInfo } from '../../src/lab/topology';

const XFER = path.resolve(__dirname, '..', 'e2e', 'fixtures', 'tcp-xfer.js');

export interface TransferResult {
  /** both ends exited 0, the byte counts equal `bytes` and the hashes match */
  readonly ok: boolean;
  readonly clientCode: number | null;
  readonly serverCode: number | null;
  /** "<bytes> <sha256>" as printed by each end */
  readonly sent: string;
  readonly got: string;
  readonly stderr: string;
  /** wall time of the transfer, ms (diagnostic) */
  readonly ms: number;
}

/** Runs in ns: node ...args; resolves exit code, stdout, stderr; SIGKILL past timeoutMs. */
function runIn(ns: string, args: readonly string[], timeoutMs: number, onStderr?: (s: string) => void) {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  child.stderr.on('data', (d: Buffer) => { err += d.toString(); onStderr?.(err); });
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
  const done = new Promise<{ code: number | null; out: string; err: string }>((resolve) => child.on('exit', (code) => {
    clearTimeout(timer);
    resolve({ code, out, err });
  }));
  return { child, done };
}

export interface TransferOptions {
  /** at most this many bytes/s */
  readonly rate?: number;
  /** called once the receiver listens and the sender has been started */
  readonly onStart?: () => void;
  /** 6: over IPv6, to `to.ip6` (the receiver listens on ::) */
  readonly family?: 4 | 6;
}

/** from -> to, `bytes` bytes on TCP port `port`; every step bounded by timeoutMs. */
export async function tcpTransfer(from: PodInfo, to: PodInfo, port: number, bytes: number, timeoutMs = 120_000, opts: TransferOptions = {}): Promise<TransferResult> {
  let listening!: () => void;
  const ready = new Promise<void>((r) => { listening = r; });
  const v6 = opts.family === 6;
  const dst = v6 ? to.ip6 : to.ip;
  if (dst === undefined) throw new Error(`tcpTransfer: pod ${to.ns} has no IPv6 address`);
  const server = runIn(to.ns, [XFER, 'serve', String(port), String(timeoutMs), ...(v6 ? ['::'] : [])], timeoutMs + 10_000, (e) => { if (e.includes('listening')) listening(); });
  const first = await Promise.race([ready.then(() => 'listening'), server.done.then(() => 'exited'), new Promise((r) => setTimeout(r, 30_000, 'timeout'))]);
  if (first !== 'listening') {
    server.child.kill('SIGKILL');
    const s = await server.done;
    return { ok: false, clientCode: null, serverCode: s.code, sent: '', got: '', stderr: `receiver did not listen (${String(first)}): ${s.err}`, ms: 0 };
  }
  const t0 = Date.now();
  const client = runIn(from.ns, [XFER, 'send', dst, String(port), String(bytes), String(timeoutMs), ...(opts.rate === undefined ? [] : [String(opts.rate)])], timeoutMs + 10_000);
  opts.onStart?.();
  const [c, s] = await Promise.all([client.done, server.done]);
  const ms = Date.now() - t0;
  const [sent, got] = [c.out.trim(), s.out.trim()];
  const ok = c.code === 0 && s.code === 0 && sent === got && sent.startsWith(`${bytes} `);
  return { ok, clientCode: c.code, serverCode: s.code, sent, got, stderr: (c.err + s.err).replace('listening\n', '').trim(), ms };
}
