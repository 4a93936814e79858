/**
 * Network namespaces owned by one test run. Every name carries a per-run prefix; cleanup()
 * deletes exactly the namespaces this object created (never `ip -all netns del`).
 */
import { randomBytes } from 'node:crypto';
import { must, run } from './exec';

export class NetnsSet {
  /** e.g. "ovt3fa2" — short, so that "<prefix>-<name>" stays a valid name */
  readonly prefix: string;
  private readonly created: string[] = [];

  constructor(tag = 'ovt') {
    this.prefix = `${tag}${randomBytes(3).toString('hex')}`;
  }

  /** Creates namespace "<prefix>-<name>" with lo up; returns its full name. */
  add(name: string): string {
    const ns = `${this.prefix}-${name}`;
    must('ip', ['netns', 'add', ns]);
    this.created.push(ns);
    must('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    return ns;
  }

  /** Runs `cmd args` inside namespace ns; throws on failure. */
  exec(ns: string, cmd: string, args: readonly string[], timeoutMs = 30_000): string {
    return must('ip', ['netns', 'exec', ns, cmd, ...args], { timeoutMs });
  }

  /** Like exec, but returns the result instead of throwing. */
  tryExec(ns: string, cmd: string, args: readonly string[], timeoutMs = 30_000) {
    return run('ip', ['netns', 'exec', ns, cmd, ...args], { timeoutMs });
  }

  /** `ip -n ns ...`; throws on failure. */
  ip(ns: string, ...args: string[]): string {
    return must('ip', ['-n', ns, ...args]);
  }

  /** Deletes exactly the namespaces created here (veths inside go with them). */
  cleanup(): void {
    for (const ns of this.created.splice(0).reverse()) run('ip', ['netns', 'del', ns]);
  }

  /** Names of this run's namespaces that still exist (for leak assertions). */
  leftovers(): string[] {
    const out = run('ip', ['netns', 'list']).stdout;
    return out.split('\n').map((l) => l.split(' ')[0] ?? '').filter((n) => n.startsWith(`${this.prefix}-`));
  }
}
