/**
 * Logging: pino, one line per event that matters (never one per packet), written
 * synchronously to fd 1 so nothing is lost on exit.
 *
 * Formats (--log-format): `json` (pino's JSON lines, the level as its name: "level":"info")
 * or `text` (`<ISO time> <LEVEL> <message> key=value ...`, one line). Under systemd with
 * stdout connected to the journal (JOURNAL_STREAM names fd 1, see systemd.exec(5)) every
 * line starts with its syslog priority, sd-daemon(3) style (`<3>` for errors), which journald
 * strips and records as PRIORITY=, so `journalctl -p err` shows errors.
 */
import { fstatSync } from 'node:fs';
import pino from 'pino';

export type Logger = pino.Logger;
export const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
export type LogLevel = (typeof LOG_LEVELS)[number];
export const LOG_FORMATS = ['json', 'text'] as const;
export type LogFormat = (typeof LOG_FORMATS)[number];

/** pino level name -> syslog priority (sd-daemon(3) prefix) */
const PRIORITY: Record<string, number> = { fatal: 2, error: 3, warn: 4, info: 6, debug: 7, trace: 7 };
/** fields of a pino record that the text format shows in its own way, or not at all */
const TEXT_SKIP = new Set(['level', 'time', 'msg', 'pid', 'name']);

export interface LogOutput {
  /** one complete line, newline included */
  write(line: string): void;
  /** prefix each line with its syslog priority (<N>) */
  journal: boolean;
}

/** True when $JOURNAL_STREAM ("dev:ino") names the file open on `fd` (stdout connected to journald). */
export function journalStream(env: NodeJS.ProcessEnv = process.env, fd = 1): boolean {
  const m = /^(\d+):(\d+)$/.exec(env['JOURNAL_STREAM'] ?? '');
  if (!m) return false;
  try {
    const st = fstatSync(fd, { bigint: true });
    return st.dev === BigInt(m[1] as string) && st.ino === BigInt(m[2] as string);
  } catch {
    return false;
  }
}

/** True when fds a and b are the same open file (e.g. stdout and stderr both the journal). */
export function sameFile(a: number, b: number): boolean {
  try {
    const x = fstatSync(a, { bigint: true });
    const y = fstatSync(b, { bigint: true });
    return x.dev === y.dev && x.ino === y.ino;
  } catch {
    return false;
  }
}

function textValue(v: unknown): string {
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  return JSON.stringify(v) ?? String(v);
}

/** One pino JSON record -> one text line (no newline). */
export function formatText(record: Record<string, unknown>): string {
  const time = typeof record['time'] === 'number' ? new Date(record['time']).toISOString() : new Date().toISOString();
  const level = String(record['level'] ?? 'info').toUpperCase().padEnd(5);
  const fields = Object.entries(record).filter(([k]) => !TEXT_SKIP.has(k)).map(([k, v]) => `${k}=${textValue(v)}`);
  return [time, level, String(record['msg'] ?? ''), ...fields].join(' ');
}

/** The pino destination: reformats (text) and prefixes (journal) each record. */
function destination(format: LogFormat, out: LogOutput): { write(s: string): void } {
  return {
    write(s: string) {
      for (const line of s.split('\n')) {
        if (line === '') continue;
        let record: Record<string, unknown> | undefined;
        if (format === 'text' || out.journal) {
          try {
            record = JSON.parse(line) as Record<string, unknown>;
          } catch {
            record = undefined;
          }
        }
        const body = format === 'text' && record ? formatText(record) : line;
        const prio = out.journal ? `<${PRIORITY[String(record?.['level'])] ?? 6}>` : '';
        out.write(`${prio}${body}\n`);
      }
    },
  };
}

/** fd 1 through SonicBoom in sync mode (it retries EAGAIN on a non-blocking pipe). */
function stdoutOutput(): LogOutput {
  const sonic = pino.destination({ fd: 1, sync: true });
  return { write: (line) => sonic.write(line), journal: journalStream() };
}

/** The daemon's logger; `out` defaults to fd 1, with journal prefixes when JOURNAL_STREAM names it. */
export function createLogger(level: LogLevel, format: LogFormat = 'json', out: LogOutput = stdoutOutput(), name = 'overlayd'): Logger {
  return pino({
    name,
    level,
    base: { pid: process.pid },
    formatters: { level: (label: string) => ({ level: label }) },
  }, destination(format, out));
}

/** A logger that drops everything (tests that do not inspect logs). */
export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
