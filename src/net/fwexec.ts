/**
 * The command runner of the firewall modules (masq.ts, firewall.ts): runs iptables/nft with a
 * time bound and reads /proc files. Tests substitute a fake (no root needed). All calls run
 * in the network namespace of this process, on the JS main thread (asynchronous).
 */
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { LinkError } from '../errors';

export interface CommandResult {
  /** exit status; -1 when the command could not be run (e.g. not installed) */
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export interface FirewallSystem {
  /** Runs `cmd args`, `stdin` written to its standard input when given; never rejects. */
  run(cmd: string, args: readonly string[], stdin?: string): Promise<CommandResult>;
  /** A file's text, undefined when it does not exist. */
  readFile(path: string): Promise<string | undefined>;
}

const TIMEOUT_MS = 10_000;

export const systemFirewall: FirewallSystem = {
  run(cmd, args, stdin) {
    return new Promise((resolve) => {
      const child = execFile(cmd, [...args], { timeout: TIMEOUT_MS, encoding: 'utf8' }, (err, stdout, stderr) => {
        if (!err) return resolve({ code: 0, stdout, stderr });
        const code = typeof err.code === 'number' ? err.code : -1;
        resolve({ code, stdout, stderr: stderr || err.message });
      });
      child.stdin?.on('error', () => undefined); // a command that exits early: its result says why
      if (stdin !== undefined) child.stdin?.end(stdin);
      else child.stdin?.end();
    });
  },
  async readFile(path) {
    try {
      return await readFile(path, 'utf8');
    } catch {
      return undefined;
    }
  },
};

/** Runs a command that must succeed; LinkError(command, stderr) when it does not. */
export async function mustRun(sys: FirewallSystem, cmd: string, args: readonly string[], stdin?: string): Promise<string> {
  const r = await sys.run(cmd, args, stdin);
  if (r.code !== 0) throw new LinkError(`${cmd} ${args.join(' ')}`, r.stderr);
  return r.stdout;
}

/** One entry of `nft -j list ...` output (only the fields read here). */
export interface NftChain {
  family: string; table: string; name: string; handle: number;
  type?: string; hook?: string; prio?: number; policy?: string;
}
export interface NftRule { family: string; table: string; chain: string; handle: number; comment?: string; expr?: Array<Record<string, unknown>> }
export interface NftListing { chains: NftChain[]; rules: NftRule[]; tables: { family: string; name: string }[] }

/** Parses the output of `nft -j list ruleset|table|chains`. */
export function parseNftJson(text: string): NftListing {
  const out: NftListing = { chains: [], rules: [], tables: [] };
  if (text.trim() === '') return out;
  let doc: { nftables?: Array<Record<string, unknown>> };
  try {
    doc = JSON.parse(text) as typeof doc;
  } catch (err) {
    throw new Error(`nft -j printed something that is not JSON (${(err as Error).message}): ${text.slice(0, 200)}`);
  }
  for (const item of doc.nftables ?? []) {
    if (item['chain']) out.chains.push(item['chain'] as NftChain);
    else if (item['rule']) out.rules.push(item['rule'] as NftRule);
    else if (item['table']) out.tables.push(item['table'] as { family: string; name: string });
  }
  return out;
}
