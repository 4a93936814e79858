/**
 * The release artifact (root, Debian/Ubuntu): `npm run package` builds
 * dist/overlayd_<version>_<arch>.deb; its contents are checked (the prebuilt addon for this
 * arch, production dependencies only, no test/bench/ASan build); dpkg installs it on this
 * machine; systemd-analyze verifies the installed unit; the installed /usr/bin/overlayd (native
 * engine, the packaged addon, the system's node) forwards between two nodes in network
 * namespaces; `dpkg --purge` removes it and nothing is left.
 *
 * It installs for real, so it refuses (SKIP) when overlayd is installed already or one of its
 * paths exists, and its teardown purges the package whatever failed.
 */
import t from 'tap';
import { existsSync, lstatSync, mkdtempSync, readFileSync, readdirSync, readlinkSync, realpathSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { isRoot, must, run, type RunResult } from '../helpers/exec';
import { Topology, startDaemon, stopDaemon, type DaemonHandle } from '../helpers/topology';

const ROOT = path.resolve(__dirname, '..', '..', '..');
const PKG = JSON.parse(readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as {
  version: string;
  dependencies: Record<string, string>;
  devDependencies: Record<string, string>;
};
const INSTALLED_BIN = '/usr/bin/overlayd';
const LIB = '/usr/lib/overlayd';
const ADDON = `${LIB}/build/Release/overlayd.node`;
const UNIT = '/lib/systemd/system/overlayd.service';
const ENV_FILE = '/etc/overlayd/overlayd.env';
/** must be absent before the install and again after the purge */
const OWN_PATHS = [INSTALLED_BIN, LIB, '/etc/overlayd', UNIT, '/usr/share/doc/overlayd'];
/** where the package, dpkg or `systemctl enable` put files named after it */
const SEARCH_DIRS = ['/etc', '/lib/systemd', '/usr/lib/systemd', '/usr/bin', '/usr/share/doc', '/var/lib/dpkg/info', '/var/lib/systemd'];
/** the dependencies' tests, benchmarks, examples, docs (the build prunes them) */
const DEP_CRUFT = /\/node_modules\/(@[^/]+\/)?[^/@][^/]*\/(test|tests|__tests__|bench|benchmarks|example|examples|docs)(\/|$)/;
/** ELF e_machine per process.arch */
const ELF_MACHINE: Record<string, number> = { x64: 62, arm64: 183, arm: 40, ia32: 3, riscv64: 243, ppc64: 21, s390x: 22 };

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function exists(p: string): boolean {
  try {
    lstatSync(p);
    return true;
  } catch {
    return false;
  }
}

/** dpkg's state of the package: '' when not installed (unknown, or purged) */
function packageState(): string {
  const r = run('dpkg-query', ['-W', '-f=${db:Status-Status}', 'overlayd']);
  const s = r.status === 0 ? r.stdout.trim() : '';
  return s === 'not-installed' ? '' : s;
}

/** dpkg ARGS, retried (bounded: 90 x 2 s) while another dpkg/apt holds its lock */
async function dpkg(args: readonly string[]): Promise<RunResult> {
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  for (let i = 0; ; i++) {
    const r = run('dpkg', args, { timeoutMs: 300_000, env });
    if (r.status === 0 || !/lock/i.test(r.stderr) || i >= 90) return r;
    await sleep(2000);
  }
}

/** why dpkg cannot satisfy the package's `nodejs (>= 20)` here, or undefined when it can */
function nodejsUnmet(): string | undefined {
  const q = run('dpkg-query', ['-W', '-f=${db:Status-Status} ${Version}', 'nodejs']);
  const [state, version] = q.status === 0 ? q.stdout.trim().split(' ') : [];
  if (state !== 'installed' || version === undefined) return "the Debian package nodejs is not installed (Depends: nodejs (>= 20)); this machine's node is not from dpkg";
  if (run('dpkg', ['--compare-versions', version, 'ge', '20']).status !== 0) return `the Debian package nodejs is ${version}; the package depends on nodejs (>= 20)`;
  return undefined;
}

/** files named after overlayd in SEARCH_DIRS, and which of OWN_PATHS exist */
function overlaydFiles(): string[] {
  const found = run('find', [...SEARCH_DIRS.filter(exists), '-name', '*overlayd*'], { timeoutMs: 60_000 }).stdout.split('\n').filter((l) => l !== '');
  return [...new Set([...OWN_PATHS.filter(exists), ...found])].sort();
}

function wantsLinks(): string[] {
  const dir = '/etc/systemd/system';
  if (!existsSync(dir)) return [];
  return readdirSync(dir).filter((d) => /\.(wants|requires)$/.test(d)).map((d) => path.join(dir, d, 'overlayd.service')).filter(exists);
}

interface Entry { mode: string; owner: string; size: number; path: string; target?: string }

/** `dpkg-deb -c`: one entry per archive member, path absolute without a trailing slash */
function listing(deb: string): Entry[] {
  return must('dpkg-deb', ['-c', deb]).split('\n').filter((l) => l !== '').map((line) => {
    const m = /^(\S+)\s+(\S+)\s+(\d+)\s+\S+\s+\S+\s+\.(\/.*?)(?: -> (.*))?$/.exec(line);
    if (!m) throw new Error(`dpkg-deb -c: cannot parse "${line}"`);
    const e: Entry = { mode: m[1]!, owner: m[2]!, size: Number(m[3]), path: m[4]!.replace(/(.)\/$/, '$1') };
    if (m[5] !== undefined) e.target = m[5];
    return e;
  });
}

/** the process environment without OVERLAYD_* (e.g. OVERLAYD_ADDON of the ASan run) */
const cleanEnv: NodeJS.ProcessEnv = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('OVERLAYD_')));

const precondition = (): string | undefined => {
  if (!isRoot) return 'the package test needs root (dpkg -i, network namespaces)';
  if (run('dpkg-deb', ['--version']).status !== 0 || run('dpkg', ['--print-architecture']).status !== 0) return 'not a dpkg system';
  if (packageState() !== '') return `the overlayd package is on this machine already (${packageState()}); this test installs and purges it and leaves an existing one alone`;
  const present = OWN_PATHS.filter(exists);
  if (present.length > 0) return `${present.join(', ')} exist(s) already; this test would overwrite and remove them`;
  return undefined;
};

const why = precondition();
if (why !== undefined) {
  t.skip(`SKIP: ${why}`, () => undefined);
} else {
  t.test('the Debian package: build, contents, install, run, purge', async (t) => {
    const arch = must('dpkg', ['--print-architecture']).trim();
    const deb = path.join(ROOT, 'dist', `overlayd_${PKG.version}_${arch}.deb`);
    const debExisted = existsSync(deb);
    const extracted = mkdtempSync(path.join(tmpdir(), 'overlayd-deb-test-'));
    const daemons: DaemonHandle[] = [];
    let topo: Topology | undefined;
    t.teardown(async () => {
      for (const d of daemons) await stopDaemon(d);
      topo?.cleanup();
      if (packageState() !== '') {
        const r = await dpkg(['--purge', 'overlayd']);
        if (r.status !== 0) process.stderr.write(`package test teardown: dpkg --purge overlayd: ${r.stderr}\n`);
      }
      rmSync(extracted, { recursive: true, force: true });
      if (!debExisted) rmSync(deb, { force: true });
    });

    // ---- build: the one command
    const built = run('npm', ['run', 'package'], { cwd: ROOT, timeoutMs: 600_000 });
    t.equal(built.status, 0, `npm run package: ${built.stdout.slice(-2000)}${built.stderr.slice(-2000)}`); // tsc reports on stdout
    if (built.status !== 0 || !existsSync(deb)) return;
    const debSize = statSync(deb).size;
    t.comment(`${path.basename(deb)}: ${debSize} bytes`);

    // ---- contents
    const entries = listing(deb);
    const byPath = new Map(entries.map((e) => [e.path, e]));
    await t.test('contents: the addon for this arch, production dependencies, no tests or ASan build', async (t) => {
      t.ok(debSize > 200_000 && debSize < 30_000_000, `package size ${debSize} bytes is sane`);
      const total = entries.reduce((s, e) => s + e.size, 0);
      t.ok(total > 1_000_000 && total < 80_000_000, `installed size ${total} bytes is sane`);
      t.ok(entries.every((e) => e.owner === 'root/root'), 'every file belongs to root/root');
      for (const p of [`${LIB}/package.json`, `${LIB}/README.md`, `${LIB}/dist/src/main.js`, `${LIB}/dist/src/daemon.js`,
        UNIT, ENV_FILE, '/usr/share/doc/overlayd/copyright']) {
        t.match(byPath.get(p)?.mode, /^-/, `${p} is a file`);
      }
      t.equal(byPath.get(`${LIB}/bin/overlayd`)?.mode, '-rwxr-xr-x', 'bin/overlayd is executable');
      t.equal(byPath.get(INSTALLED_BIN)?.target, '../lib/overlayd/bin/overlayd', '/usr/bin/overlayd links to it');
      t.equal(byPath.get(ENV_FILE)?.mode, '-rw-------', 'the env file (may hold the etcd password) is 0600');
      const addon = byPath.get(ADDON);
      t.ok(addon && addon.size > 20_000 && addon.size < 3_000_000, `the addon is there, ${addon?.size} bytes`);

      const paths = entries.map((e) => e.path);
      t.same(paths.filter((p) => /asan|tsan|ubsan/i.test(p)), [], 'no sanitizer build');
      t.same(paths.filter((p) => p.startsWith(`${LIB}/dist/`) && !/^\/usr\/lib\/overlayd\/dist\/src(\/|$)/.test(p)), [], 'dist/src only (no dist/test, dist/bench)');
      t.same(paths.filter((p) => p.startsWith(`${LIB}/dist/`) && (/\.(ts|map)$/.test(p) || /\/(lab|test)(\/|$)/.test(p) || /\.test\.js$/.test(p))), [], 'no sources, maps, tests or lab');
      t.same(paths.filter((p) => p === `${LIB}/build` || p.startsWith(`${LIB}/build/`)), [`${LIB}/build`, `${LIB}/build/Release`, ADDON], 'build/: the Release addon only');
      t.same(paths.filter((p) => p.startsWith(`${LIB}/native`) || /\.(c|h|gyp)$/.test(p)), [], 'no C sources');
      t.same(paths.filter((p) => p.endsWith('.node')), [ADDON], 'no other native module');
      t.same(paths.filter((p) => DEP_CRUFT.test(p)), [], "no dependency's tests, benchmarks, examples or docs");

      // production dependencies, exactly npm's production tree; no dev-only package
      for (const dep of Object.keys(PKG.dependencies)) t.ok(byPath.has(`${LIB}/node_modules/${dep}/package.json`), `dependency ${dep}`);
      const prodTree = new Set(must('npm', ['ls', '--omit=dev', '--all', '--parseable'], { cwd: ROOT, timeoutMs: 120_000 })
        .split('\n').filter((l) => l.includes('/node_modules/')).map((l) => l.slice(l.lastIndexOf('/node_modules/') + '/node_modules/'.length)));
      const devOnly = Object.keys(PKG.devDependencies).filter((d) => !prodTree.has(d));
      t.ok(devOnly.includes('tap') && devOnly.includes('typescript'), `dev-only: ${devOnly.join(' ')}`);
      t.same(devOnly.filter((d) => byPath.has(`${LIB}/node_modules/${d}`)), [], 'no dev-only dependency');
      const shipped = entries.filter((e) => e.mode.startsWith('d') && /\/node_modules\/(@[^/]+\/)?[^/@][^/]*$/.test(e.path))
        .map((e) => e.path.slice(e.path.lastIndexOf('/node_modules/') + '/node_modules/'.length)).filter((n) => !n.startsWith('@') || n.includes('/'));
      t.same([...new Set(shipped)].sort(), [...prodTree].sort(), 'node_modules holds exactly the production tree');

      // the files themselves: one ELF object, the addon, built for this arch without sanitizers
      must('dpkg-deb', ['-x', deb, extracted]);
      must('dpkg-deb', ['-e', deb, path.join(extracted, 'DEBIAN')]);
      const elf = entries.filter((e) => e.mode.startsWith('-')).map((e) => e.path).filter((p) => {
        const b = readFileSync(path.join(extracted, p));
        return b.length >= 4 && b.readUInt32BE(0) === 0x7f454c46;
      });
      t.same(elf, [ADDON], 'the only binary is the addon');
      const so = readFileSync(path.join(extracted, ADDON));
      t.equal(so.readUInt16LE(18), ELF_MACHINE[process.arch], `the addon is built for ${process.arch}`);
      t.notOk(/__(asan|ubsan|tsan)_/.test(so.toString('latin1')), 'the addon is not a sanitizer build');

      const control = readFileSync(path.join(extracted, 'DEBIAN', 'control'), 'utf8');
      t.match(control, /^Package: overlayd$/m);
      t.match(control, new RegExp(`^Version: ${PKG.version.replace(/\./g, '\\.')}$`, 'm'));
      t.match(control, new RegExp(`^Architecture: ${arch}$`, 'm'));
      const depends = /^Depends: (.*)$/m.exec(control)?.[1]?.split(/,\s*/) ?? [];
      for (const d of ['nodejs (>= 20)', 'iproute2', 'nftables']) t.ok(depends.includes(d), `Depends: ${d}`);
      t.notOk(depends.some((d) => d.startsWith('iptables')), 'iptables is not required: the firewall module works through nft without it');
      t.match(control, /^Recommends: iptables$/m, 'but recommended (iptables-nft keeps the ip filter table readable by iptables tools)');
      t.equal(readFileSync(path.join(extracted, 'DEBIAN', 'conffiles'), 'utf8'), `${ENV_FILE}\n`, 'the env file is a conffile');
      for (const s of ['postinst', 'prerm', 'postrm']) t.equal(run('sh', ['-n', path.join(extracted, 'DEBIAN', s)]).status, 0, `${s} parses`);
    });

    // ---- install: only where dpkg can satisfy Depends: nodejs (>= 20) (a node from a tarball, e.g. CI's setup-node, is no package)
    const nodejs = nodejsUnmet();
    if (nodejs !== undefined) {
      t.skip(`SKIP: install, run and purge: ${nodejs}`, () => undefined);
      return;
    }
    const nonDirs = entries.filter((e) => !e.mode.startsWith('d')).map((e) => e.path);
    const existedBefore = entries.map((e) => e.path).filter(exists);
    const filesBefore = overlaydFiles();
    const installed = await dpkg(['-i', deb]);
    t.equal(installed.status, 0, `dpkg -i: ${installed.stderr}`);
    if (installed.status !== 0) return;

    await t.test('installed: files in place, unit verified, service neither enabled nor started', async (t) => {
      t.equal(packageState(), 'installed');
      t.same(nonDirs.filter((p) => !exists(p)), [], 'every file of the package is on disk');
      const verify = run('dpkg', ['--verify', 'overlayd']);
      t.equal(`${verify.stdout}${verify.stderr}`.trim(), '', 'dpkg --verify: checksums match');
      t.equal(statSync(ENV_FILE).mode & 0o777, 0o600, 'env file 0600');
      const unit = readFileSync(UNIT, 'utf8');
      t.match(unit, /^ExecStart=\/usr\/bin\/overlayd$/m);
      t.match(unit, /^EnvironmentFile=-\/etc\/overlayd\/overlayd\.env$/m, 'the unit reads the packaged env file');
      const docs = [...unit.matchAll(/^Documentation=(.*)$/gm)].flatMap((m) => m[1]!.split(/\s+/));
      t.ok(docs.length > 0, 'Documentation= is set');
      for (const d of docs) {
        t.match(d, /^file:\//, `${d} is a local file`);
        t.ok(existsSync(d.replace(/^file:/, '')), `${d} exists`);
      }
      const v = run('systemd-analyze', ['verify', UNIT], { timeoutMs: 60_000 });
      t.equal(v.status, 0, 'systemd-analyze verify');
      t.equal(`${v.stdout}${v.stderr}`.trim(), '', 'no warnings');
      t.same(wantsLinks(), [], 'not enabled');
      if (existsSync('/run/systemd/system')) {
        t.equal(run('systemctl', ['is-enabled', 'overlayd.service']).stdout.trim(), 'disabled');
        t.equal(run('systemctl', ['is-active', 'overlayd.service']).stdout.trim(), 'inactive', 'not started');
      } else {
        t.comment('systemd is not running here: the maintainer scripts skip systemctl (daemon-reload, stop)');
      }
      t.equal(readlinkSync(INSTALLED_BIN), '../lib/overlayd/bin/overlayd');
      t.match(readFileSync(`${LIB}/bin/overlayd`, 'utf8'), /^#!\/usr\/bin\/env -S \/usr\/bin\/node --max-semi-space-size=2 --expose-gc --optimize-for-size\n/, "the system's node, with the daemon's flags");
      t.equal(run(INSTALLED_BIN, ['version'], { env: cleanEnv }).stdout, `overlayd ${PKG.version}\n`);
      for (const dep of Object.keys(PKG.dependencies)) {
        t.equal(run('/usr/bin/node', ['-e', `require(${JSON.stringify(dep)})`], { cwd: LIB, env: cleanEnv }).status, 0, `${dep} loads from ${LIB}`);
      }
    });

    await t.test('the installed /usr/bin/overlayd forwards between two nodes (native engine)', async (t) => {
      topo = new Topology({ nodes: 2, podsPerNode: 1, tag: 'ovpkg' });
      const tp = topo;
      const args = (k: number) => ['--iface', 'eth0', '--static-config', tp.staticConfig(k), '--subnet-file', path.join(tp.tmp, `n${k}.env`)];
      for (const k of [1, 2]) daemons.push(await startDaemon(tp.node(k).ns, args(k), 30_000, cleanEnv, INSTALLED_BIN));
      const d1 = daemons[0]!;
      t.equal(readlinkSync(`/proc/${d1.pid}/exe`), realpathSync('/usr/bin/node'), 'runs on the system node');
      t.ok(readFileSync(`/proc/${d1.pid}/cmdline`, 'utf8').split('\0').includes('--max-semi-space-size=2'), "with bin/overlayd's node flags");
      t.match(readFileSync(`/proc/${d1.pid}/maps`, 'utf8'), ADDON, 'the packaged addon is loaded');
      const [p1, p2] = [tp.node(1).pods[0]!, tp.node(2).pods[0]!];
      t.equal(tp.netns.tryExec(p1.ns, 'ping', ['-n', '-c', '3', '-i', '0.2', '-W', '3', p2.ip]).status, 0, 'pod 1 -> pod 2 across the overlay');
      const status = JSON.parse(tp.netns.exec(tp.node(1).ns, INSTALLED_BIN, ['status', '--json'])) as { engine: string; routes: { subnet: string }[] };
      t.equal(status.engine, 'native');
      t.same(status.routes.map((r) => r.subnet), [tp.node(2).subnet]);
      for (const d of daemons.splice(0)) t.equal((await stopDaemon(d)).code, 0, 'SIGTERM: exit 0');
      tp.cleanup();
      t.same(tp.netns.leftovers(), [], 'namespaces gone');
      topo = undefined;
    });

    await t.test('dpkg --purge leaves nothing behind, even after systemctl enable', async (t) => {
      t.equal(run('systemctl', ['enable', 'overlayd.service']).status, 0, 'systemctl enable (as an administrator would)');
      t.ok(wantsLinks().length > 0, 'enabled: a wants link');
      const r = await dpkg(['--purge', 'overlayd']);
      t.equal(r.status, 0, `dpkg --purge: ${r.stderr}`);
      t.equal(packageState(), '', 'dpkg knows no overlayd');
      t.same(wantsLinks(), [], 'no wants link');
      t.same(entries.map((e) => e.path).filter(exists), existedBefore, 'of the package paths, exactly those that existed before exist');
      t.same(overlaydFiles(), filesBefore, 'no file named overlayd appeared');
    });
  });
}
