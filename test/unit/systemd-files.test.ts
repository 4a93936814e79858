import t from 'tap';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { FLAGS, envName } from '../../src/config';

const root = path.resolve(__dirname, '..', '..', '..');

t.test('overlayd.env lists every OVERLAYD_* variable, commented, at its default', async (t) => {
  const env = readFileSync(path.join(root, 'systemd', 'overlayd.env'), 'utf8');
  for (const [name, spec] of Object.entries(FLAGS) as [string, { noEnv?: boolean; default?: string }][]) {
    if (spec.noEnv) continue;
    t.match(env, new RegExp(`^#${envName(name)}=${(spec.default ?? '').replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`, 'm'), name);
  }
  t.notMatch(env, /^OVERLAYD_/m, 'nothing set, only documented');
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
