/**
 * A fake FirewallSystem for the firewall unit tests (test/unit/firewall*.test.ts): records
 * every command it is asked to run and answers from a handler; nothing is executed.
 */
import type { CommandResult, FirewallSystem } from '../../src/net/fwexec';

/** Answers one command line (cmd and args joined by spaces); undefined: exit 0, no output. */
export type Handler = (line: string, stdin?: string) => Partial<CommandResult> | undefined;

/**
 * Records every command as one line in `calls`, in call order; `handler` answers.
 * readFile answers from `files` (path -> content; absent: undefined).
 */
export function fakeSystem(handler: Handler = () => undefined, files: Record<string, string> = {}): { sys: FirewallSystem; calls: string[] } {
  const calls: string[] = [];
  const sys: FirewallSystem = {
    async run(cmd, args, stdin) {
      const line = [cmd, ...args].join(' ');
      calls.push(line);
      const r = handler(line, stdin) ?? {};
      return { code: r.code ?? 0, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
    },
    async readFile(path) {
      return files[path];
    },
  };
  return { sys, calls };
}

/** `nft -j list ...` output listing the given chain objects. */
export const chains = (...cs: object[]): string =>
  JSON.stringify({ nftables: [{ metainfo: { json_schema_version: 1 } }, ...cs.map((c) => ({ chain: c }))] });
