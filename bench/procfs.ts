/**
 * What the benchmarks read from /proc: CPU time and memory of a process (all its threads),
 * and the whole machine's CPU time. Linux only.
 */
import { readFileSync } from 'node:fs';
import { run } from '../src/lab/exec';

let clkTck: number | undefined;

/** Clock ticks per second of /proc times (sysconf(_SC_CLK_TCK), via getconf; 100 if that fails). */
export function clockTicks(): number {
  if (clkTck === undefined) {
    const n = Number(run('getconf', ['CLK_TCK']).stdout.trim());
    clkTck = Number.isInteger(n) && n > 0 ? n : 100;
  }
  return clkTck;
}

/** utime + stime of process `pid` (every thread, live and exited), seconds; undefined if gone. */
export function processCpuSeconds(pid: number): number | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // fields after "(comm)": the comm may hold spaces and parentheses, so split after the last ')'
  const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
  // rest[0] is field 3 (state); utime is field 14, stime field 15
  const utime = Number(rest[11]);
  const stime = Number(rest[12]);
  if (!Number.isFinite(utime) || !Number.isFinite(stime)) return undefined;
  return (utime + stime) / clockTicks();
}

export interface MemInfo {
  /** resident set size now (VmRSS), MB (1e6 bytes, the unit of the target) */
  readonly rssMB: number;
  /** peak resident set size (VmHWM), MB */
  readonly hwmMB: number;
}

/** VmRSS and VmHWM (kB there means KiB) of process `pid`; undefined if gone. */
export function processMemory(pid: number): MemInfo | undefined {
  let text: string;
  try {
    text = readFileSync(`/proc/${pid}/status`, 'utf8');
  } catch {
    return undefined;
  }
  const kib = (field: string) => Number(new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  const rss = kib('VmRSS');
  const hwm = kib('VmHWM');
  if (!Number.isFinite(rss)) return undefined;
  return { rssMB: (rss * 1024) / 1e6, hwmMB: (hwm * 1024) / 1e6 };
}

/** The name of process `pid` (/proc/PID/comm), or undefined if gone. */
export function processName(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return undefined;
  }
}

export interface HostCpu {
  /** busy time of all CPUs (user+nice+system+irq+softirq+steal), seconds */
  readonly busy: number;
  /** of which softirq, seconds */
  readonly softirq: number;
}

/** The machine's aggregate CPU time from /proc/stat (all namespaces share it). */
export function hostCpu(): HostCpu {
  const line = readFileSync('/proc/stat', 'utf8').split('\n').find((l) => l.startsWith('cpu ')) ?? '';
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  const [user = 0, nice = 0, system = 0, , , irq = 0, softirq = 0, steal = 0] = f;
  const hz = clockTicks();
  return { busy: (user + nice + system + irq + softirq + steal) / hz, softirq: softirq / hz };
}
