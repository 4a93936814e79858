import t from 'tap';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { FLAGS, envName, envFileText } from '../../src/config';

const root = path.resolve(__dirname, '..', '..', '..');

t.test('overlayd.env lists every OVERLAYD_* variable, commented, at its default', async (t) => {
  const env = readFileSync(path.join(root, 'systemd', 'overlayd.env'), 'utf8');
  for (const [name, spec] of Object.entries(FLAGS) as [string, { noEnv?: boolean; default?: string }][]) {
    if (spec.noEnv) continue;
    t.match(env, new RegExp(`^#${envName(name)}=${(spec.default ?? '').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`, 'm'), name);
  }
  t.notMatch(env, /^OVERLAYD_/m, 'nothing set, only documented');
  t.equal(env, envFileText(), 'systemd/overlayd.env is up to date (regenerate: node -e "process.stdout.write(require(\'./dist/src/config\').envFileText())" > systemd/overlayd.env)');
});

t.test('overlayd.service: notify, restart on failure, after network-online, least privilege', async (t) => {
  const unit = readFileSync(path.join(root, 'systemd', 'overlayd.service'), 'utf8');
  for (const line of ['Type=notify', 'Restart=on-failure', 'After=network-online.target', 'Wants=network-online.target',
    'CapabilityBoundingSet=CAP_NET_ADMIN', 'NoNewPrivileges=yes', 'ProtectSystem=strict', 'ReadWritePaths=/run/flannel',
    'ProtectHome=yes', 'PrivateTmp=yes', 'EnvironmentFile=-/etc/overlayd/overlayd.env']) {
    t.match(unit, new RegExp(`^${line.replace(/[.*+?^${}()|[\]\\/-]/g, '\\$&')}$`, 'm'), line);
  }
  t.notMatch(unit, /^ProtectKernelTunables=yes/m, 'overlayd writes net.ipv4.conf.<tun>.accept_local');
});

t.test('systemd-analyze verify accepts the unit without a single warning', async (t) => {
  const dir = mkdtempSync(path.join(tmpdir(), 'overlayd-unit-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const unit = readFileSync(path.join(root, 'systemd', 'overlayd.service'), 'utf8')
    // verify checks that ExecStart exists: point it at this checkout's command
    .replace(/^ExecStart=\/usr\/bin\/overlayd$/m, `ExecStart=${path.join(root, 'bin', 'overlayd')}`);
  t.match(unit, /ExecStart=\/.*\/bin\/overlayd$/m);
  const file = path.join(dir, 'overlayd.service');
  writeFileSync(file, unit);
  const r = spawnSync('systemd-analyze', ['verify', file], { encoding: 'utf8', timeout: 30_000 });
  t.equal(r.error, undefined, 'systemd-analyze runs (package systemd)');
  t.equal(r.status, 0);
  t.equal(`${r.stdout}${r.stderr}`.trim(), '', 'no warnings');
});
