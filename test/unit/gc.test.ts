import t from 'tap';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';

const GC_MODULE = path.resolve(__dirname, '..', '..', 'src', 'ops', 'gc.js');
const BIN = path.resolve(__dirname, '..', '..', '..', 'bin', 'overlayd');

/** collectGarbage()'s answer in a fresh node started with `flags`. */
function collects(flags: string[]): string {
  return execFileSync(process.execPath, [...flags, '-e', `process.stdout.write(String(require(${JSON.stringify(GC_MODULE)}).collectGarbage()))`], { encoding: 'utf8', timeout: 60_000 });
}

t.test('collectGarbage runs V8 gc only when node has --expose-gc, and never turns it on by itself', async (t) => {
  t.equal(collects([]), 'false', 'plain node: nothing happens');
  t.equal(collects(['--expose-gc']), 'true', 'node --expose-gc: a full collection');
  t.equal(execFileSync(process.execPath, ['-e', `require(${JSON.stringify(GC_MODULE)}).collectGarbage(); process.stdout.write(typeof globalThis.gc)`], { encoding: 'utf8', timeout: 60_000 }), 'undefined', 'no gc appears in plain node');
});

t.test('bin/overlayd runs node with --expose-gc', async (t) => {
  const first = readFileSync(BIN, 'utf8').split('\n')[0] as string;
  t.match(first, /^#!\/usr\/bin\/env -S node .*--expose-gc( |$)/);
});
