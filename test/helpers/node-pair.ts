/**
 * The setup the two-node e2e tests share (uso, offloads, impairment): a lab of two nodes
 * with one pod each, overlayd on both with the lab's static config, status queries, fixture
 * servers that announce "listening", and the final check that no namespace is left.
 * Root only (network namespaces, TUN devices); callers skip without root.
 */
import t, { type Test } from 'tap';
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { run } from './exec';
import { Topology, startDaemon, stopDaemon, OVERLAYD_BIN, type DaemonHandle } from './topology';
import type { StatusDoc } from '../../src/ops/status-types';

/** Flags that turn every offload off (TUN offloads, UDP_SEGMENT sends, UDP_GRO receives). */
export const OFFLOADS_OFF: readonly string[] = ['--tun-offload', 'false', '--udp-gso', 'false', '--udp-gro', 'false'];

/**
 * A fresh two-node lab, one pod per node, deleted when `t` ends. Its namespace prefix is
 * appended to `prefixes` for checkNoNamespacesLeft.
 */
export function nodePair(t: Test, prefixes: string[]): Topology {
  const topo = new Topology({ nodes: 2, podsPerNode: 1 });
  t.teardown(() => topo.cleanup());
  prefixes.push(topo.netns.prefix);
  return topo;
}

/**
 * Starts overlayd on nodes 1..args.length of `topo`, in order, each waited for: node k runs
 * with args[k-1] followed by its static config and the subnet file <topo.tmp>/n<k>.env.
 * A node whose args hold --partial-checksums is advertised so in every static config.
 * Every daemon started (also when a later one fails to start) is stopped when `t` ends.
 */
export async function startNodeDaemons(t: Test, topo: Topology, args: readonly (readonly string[])[]): Promise<DaemonHandle[]> {
  const daemons: DaemonHandle[] = [];
  t.teardown(async () => { for (const d of daemons) await stopDaemon(d); });
  const partial = args.flatMap((a, i) => (a.includes('--partial-checksums') ? [i + 1] : []));
  for (const [i, a] of args.entries()) {
    const k = i + 1;
    daemons.push(await startDaemon(topo.node(k).ns, [...a, '--static-config', topo.staticConfig(k, [], {}, partial), '--subnet-file', path.join(topo.tmp, `n${k}.env`)]));
  }
  return daemons;
}

/** `overlayd status --json` run in `ns`, parsed; throws when it fails or exceeds timeoutMs. */
export function statusOf(topo: Topology, ns: string, timeoutMs = 10_000): StatusDoc {
  return JSON.parse(topo.netns.exec(ns, process.execPath, [OVERLAYD_BIN, 'status', '--json'], timeoutMs)) as StatusDoc;
}

/**
 * Spawns `argv` in `ns` and waits (at most 30 s, then kills it and rejects) until its
 * stderr says "listening". `out` is its stdout so far; `done` resolves to its exit code.
 * The caller owns the process: it must make it exit (fixtures take a lifetime argument).
 */
export async function startListening(ns: string, argv: readonly string[]): Promise<{ out: () => string; done: Promise<number | null> }> {
  const child = spawn('ip', ['netns', 'exec', ns, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
  const done = new Promise<number | null>((resolve) => child.on('exit', (c) => resolve(c)));
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => { child.kill('SIGKILL'); reject(new Error(`${argv.join(' ')}: did not listen within 30 s (${err})`)); }, 30_000);
    child.stderr.on('data', (d: Buffer) => { err += d.toString(); if (err.includes('listening')) { clearTimeout(timer); resolve(); } });
  });
  return { out: () => out, done };
}

/** Adds the last test of a file: no namespace of any of `prefixes` is left. */
export function checkNoNamespacesLeft(prefixes: readonly string[]): void {
  t.test('no namespace left behind', async (t) => {
    const names = run('ip', ['netns', 'list']).stdout.split('\n').map((l) => l.split(' ')[0] ?? '');
    t.ok(prefixes.length > 0);
    for (const prefix of prefixes) t.same(names.filter((n) => n.startsWith(`${prefix}-`)), [], `none of ${prefix}-*`);
  });
}
