/**
 * The `overlayd` command. `overlayd [flags]` runs the daemon; `overlayd status [--json]`
 * asks the daemon of this network namespace. Returns the process exit code.
 */
import { parseFlags } from './cli-flags';
import { helpText, parseDaemonArgs, parseHostPort } from './config';
import { ConfigError, OverlaydError, errorMessage } from './errors';
import { createLogger, sameFile } from './ops/log';
import { getJson, STATUS_SOCKET, type HttpAnswer } from './ops/status-socket';
import { formatStatus, type StatusDoc } from './ops/status-types';
import { VERSION } from './ops/version';

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
    'Asks the overlayd daemon of this network namespace for its state and prints it. It finds',
    'the daemon on its status socket (no flag or environment variable needed).',
    '  --json                 print the status document as JSON',
    '  --metrics-addr ADDR    ask over HTTP at this address instead (the daemon\'s --metrics-addr)',
    '  --help, -h             print this help',
    '',
    'Exit codes: 0 healthy, 1 the daemon answered but is not healthy (waiting, lease lost, ...),',
    '2 usage error, 3 no daemon answers.',
  ].join('\n') + '\n';
}

/**
 * `overlayd status`: asks the daemon of this network namespace over its status socket (or over
 * HTTP when --metrics-addr is given). Exit 0 healthy, 1 answering but unhealthy (waiting,
 * lease lost, ...), 3 no daemon answers.
 */
async function statusCommand(argv: readonly string[]): Promise<number> {
  const given = parseFlags(argv, STATUS_FLAGS, {}, STATUS_USAGE);
  if (given.get('help') === true) {
    process.stdout.write(statusHelpText());
    return 0;
  }
  const flag = given.get('metrics-addr');
  const addrText = Array.isArray(flag) ? (flag.at(-1) as string) : undefined;
  const target = addrText ? parseHostPort('metrics-addr', addrText) : { socketPath: STATUS_SOCKET };
  const where = addrText ? `on ${addrText}` : 'on its status socket';
  let res: HttpAnswer;
  try {
    res = await getJson(target, '/status', 5000);
  } catch (err) {
    process.stderr.write(`overlayd status: no overlayd daemon answers ${where} in this network namespace (${errorMessage(err)})\n`);
    return 3;
  }
  const doc = res.body as StatusDoc;
  process.stdout.write(given.get('json') === true ? JSON.stringify(doc, null, 2) + '\n' : formatStatus(doc));
  return doc.healthy === true ? 0 : 1;
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
    const logger = createLogger(cmd.config.logLevel, cmd.config.logFormat);
    for (const w of cmd.warnings) logger.warn(w);
    try {
      // loaded here so that `overlayd status` does not pay for etcd/gRPC and the addon
      const { runDaemon } = require('./daemon') as typeof import('./daemon');
      return await runDaemon(cmd.config, logger);
    } catch (err) {
      logger.fatal({ err: errorMessage(err), code: err instanceof OverlaydError ? err.code : undefined }, 'cannot start');
      // reported once: the log line is enough when stderr goes where stdout goes (the journal)
      if (!sameFile(1, 2)) process.stderr.write(`overlayd: ${errorMessage(err)}\n`);
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
