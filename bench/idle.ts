/**
 * The daemon's idle CPU (issue 13: <= 1% of a core with no traffic): /proc/PID/stat over a
 * window, the process's own time (utime+stime, every thread) and its reaped children's
 * (cutime+cstime: the iptables/nft commands of --iptables-resync). Linux only.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { clockTicks } from './procfs';

export interface IdleCpu {
  readonly seconds: number;
  /** utime+stime over the window, % of one core */
  readonly selfPct: number;
  /** cutime+cstime (children waited for) over the window, % of one core */
  readonly childrenPct: number;
  readonly totalPct: number;
}

/** Fields 14-17 of /proc/PID[/task/TID]/stat, clock ticks; undefined if gone. */
function statTicks(file: string): { name: string; utime: number; stime: number; cutime: number; cstime: number } | undefined {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  const name = text.slice(text.indexOf('(') + 1, text.lastIndexOf(')'));
  // fields after "(comm)": rest[0] is field 3 (state); utime is field 14
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ').map(Number);
  return { name, utime: rest[11]!, stime: rest[12]!, cutime: rest[13]!, cstime: rest[14]! };
}

/** Per thread (tid -> name, utime, stime ticks) of process pid, now. */
export function threadTicks(pid: number): Map<number, { name: string; utime: number; stime: number }> {
  const out = new Map<number, { name: string; utime: number; stime: number }>();
  let tids: string[] = [];
  try {
    tids = readdirSync(`/proc/${pid}/task`);
  } catch {
    return out;
  }
  for (const tid of tids) {
    const t = statTicks(`/proc/${pid}/task/${tid}/stat`);
    if (t) out.set(Number(tid), t);
  }
  return out;
}

/** CPU of process pid over the next `seconds` (>= 1), with nothing else asked of it. Rejects when it exits meanwhile. */
export async function idleCpu(pid: number, seconds: number): Promise<IdleCpu> {
  const a = statTicks(`/proc/${pid}/stat`);
  const t0 = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, seconds * 1000));
  const b = statTicks(`/proc/${pid}/stat`);
  const wall = Number(process.hrtime.bigint() - t0) / 1e9;
  if (!a || !b) throw new Error(`idle CPU: pid ${pid} exited`);
  const pct = (ticks: number) => (100 * ticks) / clockTicks() / wall;
  const selfPct = pct(b.utime + b.stime - a.utime - a.stime);
  const childrenPct = pct(b.cutime + b.cstime - a.cutime - a.cstime);
  return { seconds: wall, selfPct, childrenPct, totalPct: selfPct + childrenPct };
}

export function formatIdle(r: IdleCpu): string {
  return `idle CPU over ${r.seconds.toFixed(1)} s: ${r.totalPct.toFixed(2)}% of a core (self ${r.selfPct.toFixed(2)}%, children ${r.childrenPct.toFixed(2)}%)`;
}
