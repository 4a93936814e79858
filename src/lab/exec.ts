/** Test/lab command runner: used by tests, benchmarks and the demo, never by the daemon. */
import { spawnSync, type SpawnSyncOptions } from 'node:child_process';

export interface RunResult {
  readonly status: number;
  readonly stdout: string;
  readonly stderr: string;
}

/** Output a lab command may print, bytes (`overlayd status --json` with 10,000 routes is over 1 MB). */
const MAX_OUTPUT = 64 * 1024 * 1024;

/** Runs a command synchronously with a time bound (ms); never throws on non-zero exit. */
export function run(cmd: string, args: readonly string[], opts: SpawnSyncOptions & { timeoutMs?: number } = {}): RunResult {
  const r = spawnSync(cmd, args, { encoding: 'utf8', timeout: opts.timeoutMs ?? 30_000, maxBuffer: MAX_OUTPUT, ...opts });
  return {
    status: r.status ?? -1,
    stdout: String(r.stdout ?? ''),
    stderr: String(r.stderr ?? '') + (r.error ? String(r.error) : ''),
  };
}

/** Runs a command and throws with its stderr when it fails. */
export function must(cmd: string, args: readonly string[], opts: SpawnSyncOptions & { timeoutMs?: number } = {}): string {
  const r = run(cmd, args, opts);
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} -> exit ${r.status}: ${r.stderr.trim()}`);
  return r.stdout;
}

export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
