/**
 * The `overlayd` command. `overlayd [flags]` runs the daemon; `overlayd status [--json]`
 * asks the daemon of this network namespace. Returns the process exit code.
 */
import { parseArgs } from 'node:util';
import { helpText, parseDaemonArgs, parseHostPort } from './config';
import { OverlaydError, errorMessage } from './errors';
import { createLogger, sameFile } from './ops/log';
import { getJson, STATUS_SOCKET, type HttpAnswer } from './ops/status-socket';
import { formatStatus, type StatusDoc } from './ops/status-types';
import { VERSION } from './ops/version';


/**
 * `overlayd status`: asks the daemon of this network namespace over its status socket (or over
 * HTTP when --metrics-addr is given). Exit 0 healthy, 1 answering but unhealthy (waiting,
 * lease lost, ...), 3 no daemon answers.
 */
async function statusCommand(argv: readonly string[]): Promise<number> {
  const { values } = parseArgs({ args: [...argv], options: { 'json': { type: 'boolean' }, 'metrics-addr': { type: 'string' } }, strict: true });
  const addrText = values['metrics-addr'];
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
  process.stdout.write(values.json ? JSON.stringify(doc, null, 2) + '\n' : formatStatus(doc));
  return doc.healthy === true ? 0 : 1;
}

export async function main(argv: readonly string[]): Promise<number> {
  try {
    if (argv[0] === 'status') return await statusCommand(argv.slice(1));
    if (argv[0] === 'version') {
      process.stdout.write(`overlayd ${VERSION}\n`);
      return 0;
    }
    if (argv[0] !== undefined && !argv[0].startsWith('-')) {
      process.stderr.write(`overlayd: unknown command "${argv[0]}" (see overlayd --help)\n`);
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
