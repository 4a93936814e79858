/**
 * The `overlayd` command. `overlayd [flags]` runs the daemon; `overlayd status [--json]`
 * asks the daemon of this network namespace. Returns the process exit code.
 */
import * as http from 'node:http';
import { parseFlags } from './cli-flags';
import { helpText, parseDaemonArgs, parseHostPort, FLAGS, envName } from './config';
import { ConfigError, OverlaydError, errorMessage } from './errors';
import { createLogger } from './ops/log';

const VERSION: string = (require('../../package.json') as { version: string }).version;

function getJson(host: string, port: number, path: string, timeoutMs: number): Promise<{ status: number; body: unknown }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ host, port, path, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}

interface StatusDoc {
  ready?: boolean; engine?: string; source?: string;
  lease?: { subnet: string; publicIp: string; expiresAt: string | null };
  network?: { network: string; port: number };
  tun?: { name: string; address: string; mtu: number };
  routes?: { subnet: string; publicIp: string; ageSeconds: number | null; via?: string }[];
  counters?: Record<string, number>;
}

function formatStatus(s: StatusDoc): string {
  const out: string[] = [];
  out.push(`ready:    ${s.ready ? 'yes' : 'no'}   engine: ${s.engine ?? '-'}   route source: ${s.source ?? '-'}`);
  if (s.network) out.push(`network:  ${s.network.network}  udp port ${s.network.port}`);
  if (s.lease) out.push(`lease:    ${s.lease.subnet} -> ${s.lease.publicIp}${s.lease.expiresAt ? `  (expires ${s.lease.expiresAt})` : ''}`);
  if (s.tun) out.push(`tun:      ${s.tun.name} ${s.tun.address}/32 mtu ${s.tun.mtu}`);
  const routes = s.routes ?? [];
  out.push(`routes:   ${routes.length}`);
  for (const r of routes) out.push(`  ${r.subnet.padEnd(20)} via ${r.publicIp.padEnd(16)} age ${r.ageSeconds ?? '?'}s${r.via === 'direct' ? '  direct (kernel route, no tunnel)' : ''}`);
  out.push('counters:');
  for (const [k, v] of Object.entries(s.counters ?? {})) out.push(`  ${k.padEnd(20)} ${v}`);
  return out.join('\n') + '\n';
}

/** `overlayd status` flags (Go-style like the daemon's). */
const STATUS_FLAGS = {
  'json': { type: 'boolean' },
  'metrics-addr': { type: 'string' },
  'help': { type: 'boolean', alias: 'h' },
} as const;

const STATUS_USAGE = 'see overlayd status --help';

export function statusHelpText(): string {
  return [
    'usage: overlayd status [--json] [--metrics-addr HOST:PORT]',
    '',
    'Asks the overlayd daemon of this network namespace for its state and prints it.',
    '  --json                 print the status document as JSON',
    `  --metrics-addr ADDR    the daemon's HTTP address (default: ${envName('metrics-addr')} when set and not empty, else ${FLAGS['metrics-addr'].default})`,
    '  --help, -h             print this help',
    '',
    'Exit codes: 0 the daemon answered, 2 usage error, 3 no daemon answers.',
  ].join('\n') + '\n';
}

async function statusCommand(argv: readonly string[]): Promise<number> {
  const given = parseFlags(argv, STATUS_FLAGS, {}, STATUS_USAGE);
  if (given.get('help') === true) {
    process.stdout.write(statusHelpText());
    return 0;
  }
  const flag = given.get('metrics-addr');
  // an empty OVERLAYD_METRICS_ADDR (the daemon's HTTP server disabled) leaves the default to try
  const envAddr = process.env[envName('metrics-addr')];
  const addrText = Array.isArray(flag) ? (flag.at(-1) as string) : envAddr !== undefined && envAddr !== '' ? envAddr : FLAGS['metrics-addr'].default;
  const addr = parseHostPort('metrics-addr', addrText);
  let res: { status: number; body: unknown };
  try {
    res = await getJson(addr.host, addr.port, '/status', 3000);
  } catch (err) {
    process.stderr.write(`overlayd status: no overlayd daemon answers on ${addrText} in this network namespace (${errorMessage(err)})\n`);
    return 3;
  }
  process.stdout.write(given.get('json') === true ? JSON.stringify(res.body, null, 2) + '\n' : formatStatus(res.body as StatusDoc));
  return 0;
}

export async function main(argv: readonly string[]): Promise<number> {
  try {
    if (argv[0] === 'status') return await statusCommand(argv.slice(1));
    if (argv[0] === 'version' || argv[0] === 'help') {
      if (argv.length > 1) throw new ConfigError(`${argv[0]}: unexpected argument "${argv[1]}" (see overlayd --help)`);
      process.stdout.write(argv[0] === 'help' ? helpText() : `overlayd ${VERSION}\n`);
      return 0;
    }
    if (argv[0] !== undefined && !argv[0].startsWith('-')) {
      process.stderr.write(`overlayd: unknown command "${argv[0]}" (commands: status, version, help; see overlayd --help)\n`);
      return 2;
    }
    const cmd = parseDaemonArgs(argv);
    if (cmd.kind === 'help') {
      process.stdout.write(helpText());
      return 0;
    }
    if (cmd.kind === 'version') {
      process.stdout.write(`overlayd ${VERSION}\n`);
      return 0;
    }
    const logger = createLogger(cmd.config.logLevel);
    for (const w of cmd.warnings) logger.warn(w);
    try {
      // loaded here so that `overlayd status` does not pay for etcd/gRPC and the addon
      const { runDaemon } = require('./daemon') as typeof import('./daemon');
      return await runDaemon(cmd.config, logger);
    } catch (err) {
      logger.fatal({ err: errorMessage(err), code: err instanceof OverlaydError ? err.code : undefined }, 'cannot start');
      process.stderr.write(`overlayd: ${errorMessage(err)}\n`);
      return 1;
    }
  } catch (err) {
    if (err instanceof OverlaydError) {
      process.stderr.write(`overlayd: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
}
