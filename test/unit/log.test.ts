import t from 'tap';
import { closeSync, fstatSync, mkdtempSync, openSync, rmSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createLogger, formatText, journalStream, sameFile, type LogOutput } from '../../src/ops/log';
import { parseDaemonArgs, type Config } from '../../src/config';
import { effectiveConfig } from '../../src/daemon';

function capture(journal: boolean): LogOutput & { lines: string[] } {
  const lines: string[] = [];
  return { lines, journal, write: (l: string) => { lines.push(l); } };
}

t.test('json: one object per line, the level as its name', async (t) => {
  const out = capture(false);
  const log = createLogger('debug', 'json', out);
  log.info({ subnet: '10.244.1.0/24' }, 'lease held');
  log.error('boom');
  t.equal(out.lines.length, 2);
  const rec = JSON.parse(out.lines[0]!) as Record<string, unknown>;
  t.equal(rec['level'], 'info');
  t.equal(rec['msg'], 'lease held');
  t.equal(rec['subnet'], '10.244.1.0/24');
  t.equal((JSON.parse(out.lines[1]!) as Record<string, unknown>)['level'], 'error');
  t.ok(out.lines.every((l) => l.endsWith('\n') && l.indexOf('\n') === l.length - 1), 'one line each');
});

t.test('text: time, level name, message, fields, one line', async (t) => {
  const out = capture(false);
  const log = createLogger('info', 'text', out);
  log.warn({ sysctl: 'net.ipv4.ip_forward', err: 'two words', n: 3, o: { a: 1 } }, 'set it');
  log.debug('not shown at info');
  t.equal(out.lines.length, 1);
  const line = out.lines[0]!;
  t.match(line, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z WARN  set it sysctl=net\.ipv4\.ip_forward err="two words" n=3 o=\{"a":1\}\n$/);
  t.notMatch(line, /pid=|name=/, 'no pid/name noise');
  t.equal(formatText({ level: 'error', time: 0, msg: 'x' }), '1970-01-01T00:00:00.000Z ERROR x');
});

t.test('journal: every line carries its syslog priority, in both formats', async (t) => {
  for (const format of ['json', 'text'] as const) {
    const out = capture(true);
    const log = createLogger('trace', format, out);
    log.fatal('f');
    log.error('e');
    log.warn('w');
    log.info('i');
    log.debug('d');
    t.same(out.lines.map((l) => l.slice(0, 3)), ['<2>', '<3>', '<4>', '<6>', '<7>'], format);
    if (format === 'json') t.equal((JSON.parse(out.lines[1]!.slice(3)) as { level: string }).level, 'error', 'the rest is the JSON line');
  }
});

t.test('journalStream: only when JOURNAL_STREAM names the file on the fd', async (t) => {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'ovl-log-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const fd = openSync(path.join(dir, 'a'), 'w');
  const other = openSync(path.join(dir, 'b'), 'w');
  t.teardown(() => { closeSync(fd); closeSync(other); });
  const st = fstatSync(fd);
  t.equal(journalStream({ JOURNAL_STREAM: `${st.dev}:${st.ino}` }, fd), true);
  t.equal(journalStream({ JOURNAL_STREAM: `${st.dev}:${st.ino}` }, other), false, 'another file: output redirected');
  t.equal(journalStream({}, fd), false, 'unset');
  t.equal(journalStream({ JOURNAL_STREAM: 'garbage' }, fd), false);
  t.equal(sameFile(fd, fd), true);
  t.equal(sameFile(fd, other), false);
});

t.test('--log-format and OVERLAYD_LOG_FORMAT', async (t) => {
  const cfg = (argv: string[], env: NodeJS.ProcessEnv = {}): Config => {
    const c = parseDaemonArgs(argv, env);
    if (c.kind !== 'daemon') throw new Error('not a daemon command');
    return c.config;
  };
  t.equal(cfg([]).logFormat, 'json', 'default json');
  t.equal(cfg(['--log-format', 'text']).logFormat, 'text');
  t.equal(cfg([], { OVERLAYD_LOG_FORMAT: 'text' }).logFormat, 'text');
  t.throws(() => cfg(['--log-format', 'xml']), /--log-format \(OVERLAYD_LOG_FORMAT\): "xml" is not one of json, text/);
});

t.test('the start line\'s configuration masks the etcd password', async (t) => {
  const c = parseDaemonArgs(['--etcd-password', 's3cret', '--etcd-username', 'u'], {});
  if (c.kind !== 'daemon') throw new Error('not a daemon command');
  const shown = JSON.stringify(effectiveConfig(c.config));
  t.notMatch(shown, /s3cret/);
  t.match(shown, /"password":"\*\*\*"/);
  t.match(shown, /"username":"u"/);
  t.equal(c.config.etcd.password, 's3cret', 'the config itself is untouched');
});
