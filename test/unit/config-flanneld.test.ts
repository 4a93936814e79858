/**
 * flanneld's command line, unchanged: its unit files, its FLANNELD_* variables, its flag
 * spellings (Go's flag package) and its defaults, parsed into overlayd's Config.
 */
import t from 'tap';
import { parseDaemonArgs, helpText, FLAGS, FLANNELD_REFUSED, envName, flanneldEnvName, leaseRenewIntervalMs, unknownEnvWarnings, type Config } from '../../src/config';
import { ConfigError } from '../../src/errors';
import { execStartArgs, parseEnvironmentFile, unitEnvironment } from '../helpers/systemd-exec';

function daemonConfig(argv: string[], env: NodeJS.ProcessEnv = {}): Config {
  const r = parseDaemonArgs(argv, env);
  if (r.kind !== 'daemon') throw new Error(`expected daemon, got ${r.kind}`);
  return r.config;
}

/** Every flag flanneld defines (flannel main.go init(), plus klog's v, vmodule, log_backtrace_at), with its default. */
const FLANNELD_FLAGS: Record<string, string | undefined> = {
  'etcd-endpoints': 'http://127.0.0.1:4001,http://127.0.0.1:2379', 'etcd-prefix': '/coreos.com/network',
  'etcd-keyfile': '', 'etcd-certfile': '', 'etcd-cafile': '', 'etcd-username': '', 'etcd-password': '',
  'iface': undefined, 'iface-regex': undefined, 'iface-can-reach': '', 'subnet-file': '/run/flannel/subnet.env',
  'public-ip': '', 'public-ipv6': '', 'subnet-lease-renew-margin': '60', 'ip-masq': 'false',
  'ip-masq-fully-random-disable': 'false', 'kube-subnet-mgr': 'false', 'kube-api-url': '',
  'kube-annotation-prefix': 'flannel.alpha.coreos.com', 'kubeconfig-file': '', 'version': 'false',
  'healthz-ip': '0.0.0.0', 'healthz-port': '0', 'iptables-resync': '5', 'iptables-forward-rules': 'true',
  'ip-blackhole-route': 'false', 'net-config-path': '/etc/kube-flannel/net-conf.json',
  'set-node-network-unavailable': 'true', 'v': '0', 'vmodule': '', 'log_backtrace_at': '',
};

t.test('every flanneld flag is either accepted under its own name or refused with a reason', async (t) => {
  for (const name of Object.keys(FLANNELD_FLAGS)) {
    const spec = (FLAGS as Record<string, { flanneld?: boolean; default?: string }>)[name];
    const refused = FLANNELD_REFUSED[name];
    t.ok((spec !== undefined) !== (refused !== undefined), `${name}: exactly one of accepted/refused`);
    if (spec !== undefined && name !== 'version') t.equal(spec.flanneld, true, `${name} is marked as flanneld's (FLANNELD_ variable, --help)`);
  }
  for (const [name, spec] of Object.entries(FLAGS) as [string, { flanneld?: boolean }][]) {
    if (spec.flanneld) t.ok(name in FLANNELD_FLAGS, `${name} marked flanneld is one of flanneld's flags`);
  }
});

t.test('defaults are flanneld\'s (except etcd-endpoints: no etcd v2 port 4001)', async (t) => {
  for (const [name, def] of Object.entries(FLANNELD_FLAGS)) {
    const spec = (FLAGS as Record<string, { default?: string; type: string }>)[name];
    if (spec === undefined || name === 'version' || name === 'etcd-endpoints') continue;
    t.equal(spec.default ?? '', def ?? '', name);
  }
  const c = daemonConfig([]);
  t.same(c.etcd.endpoints, ['http://127.0.0.1:2379']);
  t.same([c.iface, c.ifaceRegex, c.ifaceCanReach], [[], [], undefined]);
  t.equal(c.ipMasq, false);
  t.equal(c.ipMasqFullyRandomDisable, false);
  t.equal(c.iptablesForwardRules, true);
  t.equal(c.iptablesResync, 5);
  t.equal(c.subnetLeaseRenewMargin, undefined, 'not given: the TTL/3 renewal alone');
  t.equal(c.publicIpv6, undefined);
  t.same(c.metricsAddr, { host: '127.0.0.1', port: 9285 }, 'healthz-port 0: the HTTP server stays at --metrics-addr');
  t.equal(c.logLevel, 'info');
});

t.test('the unit from the task: ExecStart verbatim', async (t) => {
  const unit = '[Service]\nExecStart=/usr/bin/flanneld -etcd-endpoints=http://127.0.0.1:2379 -etcd-prefix=/coreos.com/network -iface=eth0 -ip-masq\n';
  const c = daemonConfig(execStartArgs(unit, {}), {});
  t.same(c.etcd.endpoints, ['http://127.0.0.1:2379']);
  t.equal(c.etcd.prefix, '/coreos.com/network');
  t.same(c.iface, ['eth0']);
  t.equal(c.ipMasq, true);
});

t.test('Fedora/CentOS flanneld.service with /etc/sysconfig/flanneld, verbatim', async (t) => {
  const unit = [
    '[Unit]',
    'Description=Flanneld overlay address etcd agent',
    'After=network.target',
    'After=network-online.target',
    'Wants=network-online.target',
    'After=etcd.service',
    'Before=docker.service',
    '',
    '[Service]',
    'Type=notify',
    'EnvironmentFile=/etc/sysconfig/flanneld',
    'EnvironmentFile=-/etc/sysconfig/docker-network',
    'ExecStart=/usr/bin/flanneld -etcd-endpoints=${FLANNEL_ETCD_ENDPOINTS} -etcd-prefix=${FLANNEL_ETCD_PREFIX} $FLANNEL_OPTIONS',
    'ExecStartPost=/usr/libexec/flannel/mk-docker-opts.sh -k DOCKER_NETWORK_OPTIONS -d /run/flannel/docker',
    'Restart=on-failure',
    '',
  ].join('\n');
  const sysconfig = [
    '# Flanneld configuration options',
    '',
    '# etcd url location.  Point this to the server where etcd runs',
    'FLANNEL_ETCD_ENDPOINTS="http://10.0.0.1:2379,http://10.0.0.2:2379"',
    '',
    '# etcd config key.  This is the configuration key that flannel queries',
    '# For address range assignment',
    'FLANNEL_ETCD_PREFIX="/atomic.io/network"',
    '',
    '# Any additional options that you want to pass',
    'FLANNEL_OPTIONS="-iface=eth1 -iface eth0 -ip-masq=true -v=2 -subnet-file=/run/flannel/subnet.env -etcd-cafile=/etc/pki/etcd/ca.crt -etcd-certfile=/etc/pki/etcd/client.crt -etcd-keyfile=/etc/pki/etcd/client.key"',
  ].join('\n');
  const fileEnv = parseEnvironmentFile(sysconfig);
  // the unit's variables are for ExecStart expansion, and reach the process's environment too
  const c = daemonConfig(execStartArgs(unit, fileEnv), fileEnv);
  t.same(c.etcd.endpoints, ['http://10.0.0.1:2379', 'http://10.0.0.2:2379']);
  t.equal(c.etcd.prefix, '/atomic.io/network');
  t.same(c.iface, ['eth1', 'eth0'], 'repeated -iface kept in order');
  t.equal(c.ipMasq, true);
  t.equal(c.logLevel, 'debug', '-v=2');
  t.equal(c.subnetFile, '/run/flannel/subnet.env');
  t.same([c.etcd.cafile, c.etcd.certfile, c.etcd.keyfile], ['/etc/pki/etcd/ca.crt', '/etc/pki/etcd/client.crt', '/etc/pki/etcd/client.key']);
  const r = parseDaemonArgs(execStartArgs(unit, fileEnv), fileEnv);
  t.same(r.kind === 'daemon' && r.warnings, [], 'FLANNEL_* (no D) variables are not ours: no warning');
});

t.test('a unit configured by FLANNELD_* Environment= lines, verbatim', async (t) => {
  const unit = [
    '[Service]',
    'Environment="FLANNELD_IFACE=10.0.0.4"',
    'Environment="FLANNELD_ETCD_ENDPOINTS=https://10.0.0.1:2379,https://10.0.0.2:2379"',
    'Environment="FLANNELD_ETCD_PREFIX=/coreos.com/network" "FLANNELD_IP_MASQ=true"',
    'Environment=FLANNELD_SUBNET_FILE=/run/flannel/subnet.env FLANNELD_PUBLIC_IP=192.0.2.4',
    'Environment="FLANNELD_ETCD_CAFILE=/etc/ssl/etcd/ca.pem" "FLANNELD_ETCD_CERTFILE=/etc/ssl/etcd/client.pem" "FLANNELD_ETCD_KEYFILE=/etc/ssl/etcd/client-key.pem"',
    'Environment="FLANNELD_SUBNET_LEASE_RENEW_MARGIN=120" "FLANNELD_IPTABLES_RESYNC=10" "FLANNELD_IPTABLES_FORWARD_RULES=false"',
    'Environment="FLANNELD_HEALTHZ_IP=127.0.0.1" "FLANNELD_HEALTHZ_PORT=8471" "FLANNELD_V=5"',
    'ExecStart=/usr/bin/flanneld',
    '',
  ].join('\n');
  const env = unitEnvironment(unit);
  t.equal(env['FLANNELD_IFACE'], '10.0.0.4', 'the helper reads the unit');
  const r = parseDaemonArgs(execStartArgs(unit, env), env);
  if (r.kind !== 'daemon') throw new Error('not a daemon command');
  const c = r.config;
  t.same(c.iface, ['10.0.0.4']);
  t.same(c.etcd.endpoints, ['https://10.0.0.1:2379', 'https://10.0.0.2:2379']);
  t.equal(c.etcd.prefix, '/coreos.com/network');
  t.equal(c.ipMasq, true);
  t.equal(c.subnetFile, '/run/flannel/subnet.env');
  t.equal(c.publicIp, '192.0.2.4');
  t.same([c.etcd.cafile, c.etcd.certfile, c.etcd.keyfile], ['/etc/ssl/etcd/ca.pem', '/etc/ssl/etcd/client.pem', '/etc/ssl/etcd/client-key.pem']);
  t.equal(c.subnetLeaseRenewMargin, 7200, 'minutes, as flanneld');
  t.equal(c.iptablesResync, 10);
  t.equal(c.iptablesForwardRules, false);
  t.same(c.metricsAddr, { host: '127.0.0.1', port: 8471 }, 'the health endpoint is the HTTP server');
  t.equal(c.logLevel, 'trace', 'FLANNELD_V=5');
  t.same(r.warnings, []);
});

t.test('precedence: command line > OVERLAYD_* > FLANNELD_* > default; an empty FLANNELD_* is ignored', async (t) => {
  const both = { OVERLAYD_ETCD_PREFIX: '/o', FLANNELD_ETCD_PREFIX: '/f' };
  t.equal(daemonConfig(['-etcd-prefix=/c'], both).etcd.prefix, '/c');
  t.equal(daemonConfig([], both).etcd.prefix, '/o');
  t.equal(daemonConfig([], { FLANNELD_ETCD_PREFIX: '/f' }).etcd.prefix, '/f');
  t.equal(daemonConfig([], { FLANNELD_ETCD_PREFIX: '' }).etcd.prefix, '/coreos.com/network');
  t.equal(daemonConfig([], { OVERLAYD_IP_MASQ: 'false', FLANNELD_IP_MASQ: 'true' }).ipMasq, false);
  t.equal(daemonConfig(['-ip-masq=false'], { FLANNELD_IP_MASQ: 'true' }).ipMasq, false);
  t.same(daemonConfig(['-iface', 'eth2'], { FLANNELD_IFACE: 'eth1' }).iface, ['eth2'], 'command-line --iface replaces the variable');
  t.same(daemonConfig([], { FLANNELD_IFACE: 'eth1', OVERLAYD_IFACE: '' }).iface, [], 'an empty OVERLAYD_IFACE counts as given (empty)');
  // overlayd's own flags are not read from FLANNELD_*
  t.equal(daemonConfig([], { FLANNELD_ENGINE: 'js' }).engine, 'native');
  t.equal(flanneldEnvName('ip-masq'), 'FLANNELD_IP_MASQ');
  t.equal(envName('ip-masq'), 'OVERLAYD_IP_MASQ');
});

t.test('Go flag syntax: single dash, =value, booleans, repeated flags', async (t) => {
  t.equal(daemonConfig(['-ip-masq']).ipMasq, true);
  t.equal(daemonConfig(['--ip-masq']).ipMasq, true);
  for (const v of ['1', 't', 'T', 'TRUE', 'true', 'True']) t.equal(daemonConfig([`--ip-masq=${v}`]).ipMasq, true, v);
  for (const v of ['0', 'f', 'F', 'FALSE', 'false', 'False']) t.equal(daemonConfig([`-ip-masq=${v}`]).ipMasq, false, v);
  t.throws(() => daemonConfig(['--ip-masq=maybe']), /--ip-masq: "maybe" is not a boolean/);
  t.throws(() => daemonConfig(['-ip-masq', 'true']), /unexpected argument "true"; -ip-masq is a boolean flag: write -ip-masq=true/);
  t.same(daemonConfig(['-iface', 'eth1', '--iface=10.0.0.2', '-iface=eth0']).iface, ['eth1', '10.0.0.2', 'eth0']);
  t.same(daemonConfig(['-iface-regex', '^ens', '--iface-regex=10\\.1\\..*']).ifaceRegex, ['^ens', '10\\.1\\..*']);
  t.equal(daemonConfig(['-iface-can-reach=192.0.2.1']).ifaceCanReach, '192.0.2.1');
  t.equal(daemonConfig(['-etcd-prefix', '/a', '-etcd-prefix', '/b']).etcd.prefix, '/b', 'a flag given twice: the last wins (Go)');
  t.equal(daemonConfig(['-etcd-password', '-secret-']).etcd.password, '-secret-', 'the next argument is the value even when it starts with "-" (Go)');
  t.equal(daemonConfig(['-iptables-forward-rules=false']).iptablesForwardRules, false);
  t.equal(daemonConfig(['-ip-masq-fully-random-disable']).ipMasqFullyRandomDisable, true);
  t.equal(daemonConfig(['-iptables-resync=30']).iptablesResync, 30);
  t.equal(daemonConfig(['-iptables-resync=2m']).iptablesResync, 120);
  t.throws(() => daemonConfig(['-iface-regex', '(']), /--iface-regex: "\(" is not a regular expression/);
  t.throws(() => daemonConfig(['-iface-can-reach', 'router']), /--iface-can-reach: "router" is not an IPv4 address/);
  t.throws(() => daemonConfig(['-iface', 'eth0', '-iface', 'a b']), /--iface: "a b"/);
});

t.test('--public-ipv6 is validated and kept in canonical form', async (t) => {
  t.equal(daemonConfig(['-public-ipv6=2001:DB8:0:0:0:0:0:7']).publicIpv6, '2001:db8::7');
  t.equal(daemonConfig([], { FLANNELD_PUBLIC_IPV6: 'fd00::1' }).publicIpv6, 'fd00::1');
  t.throws(() => daemonConfig(['-public-ipv6=10.0.0.1']), /--public-ipv6: "10\.0\.0\.1" is not an IPv6 address/);
  t.throws(() => daemonConfig(['-public-ipv6=fe80::1%eth0']), /--public-ipv6: "fe80::1%eth0" is not an IPv6 address/, 'a zone is not an address peers can use');
  t.throws(() => daemonConfig(['-public-ipv6=::ffff:10.0.0.1']), /is not an IPv6 address/, 'IPv4-mapped');
});

t.test('--subnet-lease-renew-margin: minutes, 1..1439, shorter than the TTL; renewal at TTL/3 or earlier', async (t) => {
  const c = daemonConfig(['-subnet-lease-renew-margin=60']);
  t.equal(c.subnetLeaseRenewMargin, 3600);
  t.equal(leaseRenewIntervalMs(c), 8 * 3600 * 1000, '24h TTL: a third of it comes first');
  const late = daemonConfig(['-subnet-lease-renew-margin=1200']);
  t.equal(leaseRenewIntervalMs(late), 4 * 3600 * 1000, '20 h margin: renew 4 h after the last renewal');
  t.equal(leaseRenewIntervalMs(daemonConfig(['--subnet-lease-ttl', '30s'])), undefined, 'not given: the keeper default');
  t.throws(() => daemonConfig(['-subnet-lease-renew-margin=0']), /--subnet-lease-renew-margin: 0 is out of range: 1m\.\.1439m/);
  t.throws(() => daemonConfig(['-subnet-lease-renew-margin=1440']), /out of range: 1m\.\.1439m/);
  t.throws(() => daemonConfig(['-subnet-lease-renew-margin=10', '--subnet-lease-ttl=5m']), /--subnet-lease-renew-margin: 10m must be shorter than --subnet-lease-ttl 5m/);
});

t.test('--healthz-ip/--healthz-port: flanneld\'s health endpoint is overlayd\'s HTTP server', async (t) => {
  t.same(daemonConfig(['-healthz-port=8471']).metricsAddr, { host: '0.0.0.0', port: 8471 }, 'flanneld\'s default healthz-ip');
  t.same(daemonConfig(['-healthz-ip=10.0.0.5', '-healthz-port=8471']).metricsAddr, { host: '10.0.0.5', port: 8471 });
  t.same(daemonConfig(['-healthz-port=8471'], { OVERLAYD_METRICS_ADDR: '' }).metricsAddr, { host: '0.0.0.0', port: 8471 }, 'healthz asks for a server even when metrics-addr is empty');
  t.same(daemonConfig(['-healthz-ip=127.0.0.1', '-healthz-port=9285', '--metrics-addr=127.0.0.1:9285']).metricsAddr, { host: '127.0.0.1', port: 9285 }, 'the same address twice is fine');
  t.throws(() => daemonConfig(['-healthz-port=8471', '--metrics-addr=127.0.0.1:9285']), /--healthz-port and --metrics-addr name two addresses/);
  t.throws(() => daemonConfig(['-healthz-port=70000']), /--healthz-port: "70000" is not a whole number in 0\.\.65535/);
  t.throws(() => daemonConfig(['-healthz-port=80', '-healthz-ip=localhost']), /--healthz-ip: "localhost" is not an IP address/);
});

t.test('-v N maps onto log levels; --log-level wins when given at the same or a higher level', async (t) => {
  const levels: [string, string][] = [['0', 'info'], ['1', 'debug'], ['2', 'debug'], ['4', 'debug'], ['5', 'trace'], ['10', 'trace']];
  for (const [v, level] of levels) {
    t.equal(daemonConfig(['-v', v]).logLevel, level, `-v ${v}`);
    t.equal(daemonConfig([`--v=${v}`]).logLevel, level, `--v=${v}`);
  }
  t.equal(daemonConfig(['-v', '3', '--log-level', 'warn']).logLevel, 'warn', 'both on the command line: --log-level');
  t.equal(daemonConfig(['-v', '3'], { OVERLAYD_LOG_LEVEL: 'warn' }).logLevel, 'debug', 'the command line beats the environment');
  t.equal(daemonConfig([], { OVERLAYD_LOG_LEVEL: 'warn', FLANNELD_V: '3' }).logLevel, 'warn');
  t.throws(() => daemonConfig(['-v', 'loud']), { message: /^-v: "loud" is not a whole number/ }, 'named as --help spells it (-v)');
});

t.test('flanneld flags that cannot apply: refused with the reason, never "unknown flag"', async (t) => {
  for (const [name, r] of Object.entries(FLANNELD_REFUSED)) {
    const argv = r.type === 'boolean' ? [`-${name}`] : [`-${name}`, 'x'];
    t.throws(() => parseDaemonArgs(argv, {}), ConfigError, name);
    t.throws(() => parseDaemonArgs(argv, {}), new RegExp(`^--${name} is not supported: ${r.reason.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&')}$`), name);
    t.throws(() => parseDaemonArgs([`--${name}=${r.type === 'boolean' ? 'true' : 'x'}`], {}), /is not supported/, `${name}=`);
    t.throws(() => parseDaemonArgs([], { [flanneldEnvName(name)]: r.type === 'boolean' ? 'true' : 'x' }), new RegExp(`^${flanneldEnvName(name)} \\(--${name}\\) is not supported: `), `${name} from FLANNELD_`);
    if (r.type === 'boolean') {
      t.equal(parseDaemonArgs([`-${name}=false`], {}).kind, 'daemon', `${name}=false asks for nothing`);
      t.equal(parseDaemonArgs([], { [flanneldEnvName(name)]: 'false' }).kind, 'daemon', `${flanneldEnvName(name)}=false asks for nothing`);
    }
  }
  t.match(FLANNELD_REFUSED['kube-subnet-mgr']?.reason, /Kubernetes/);
});

t.test('unknown OVERLAYD_*/FLANNELD_* variables: a warning with the nearest name, not an error', async (t) => {
  const r = parseDaemonArgs([], { OVERLAYD_ETCD_ENDPOINT: 'http://10.0.0.1:2379', FLANNELD_IP_MAS: 'true', OVERLAYD_ADDON: '/x.node', PATH: '/bin', FLANNEL_OPTIONS: '-x' });
  if (r.kind !== 'daemon') throw new Error('not a daemon command');
  t.same(r.config.etcd.endpoints, ['http://127.0.0.1:2379'], 'ignored, as the warning says');
  t.same(r.warnings, [
    'environment variable FLANNELD_IP_MAS is not one overlayd reads; ignored: did you mean FLANNELD_IP_MASQ?',
    'environment variable OVERLAYD_ETCD_ENDPOINT is not one overlayd reads; ignored: did you mean OVERLAYD_ETCD_ENDPOINTS?',
  ]);
  t.same(unknownEnvWarnings({ OVERLAYD_HELP: '1' }).length, 1, 'a flag without a variable (--help) has none');
  t.same(unknownEnvWarnings({ OVERLAYD_ZZZZZZZZZZZZZZZZZZZZZZZZZ: '1' }), ['environment variable OVERLAYD_ZZZZZZZZZZZZZZZZZZZZZZZZZ is not one overlayd reads; ignored']);
});

t.test('a bad value from a variable names the variable', async (t) => {
  t.throws(() => daemonConfig([], { FLANNELD_IP_MASQ: 'yes please' }), /^--ip-masq \(FLANNELD_IP_MASQ\): "yes please" is not a boolean/);
  t.throws(() => daemonConfig([], { OVERLAYD_SUBNET_LEASE_TTL: 'forever' }), /^--subnet-lease-ttl \(OVERLAYD_SUBNET_LEASE_TTL\): "forever" is not a duration/);
});

t.test('--help lists the flanneld spellings, their variables and the refused flags', async (t) => {
  const text = helpText();
  for (const [name, spec] of Object.entries(FLAGS) as [string, { flanneld?: boolean; noEnv?: boolean }][]) {
    if (!spec.flanneld) continue;
    t.match(text, new RegExp(`^  --?${name}( VALUE)?( \\(repeatable\\))?  \\[flanneld\\]$`, 'm'), name);
    t.match(text, `${envName(name)}, ${flanneldEnvName(name)}]`, name);
  }
  for (const name of Object.keys(FLANNELD_REFUSED)) t.match(text, `  --${name}: `, name);
  t.match(text, /^  --help, -h$/m);
  t.match(text, 'Precedence: command line > OVERLAYD_* > FLANNELD_*');
});

t.test('any argv and environment: a Config or a ConfigError, never another exception (no stack trace for user mistakes)', async (t) => {
  // deterministic PRNG (mulberry32)
  let seed = 0x5eed;
  const rand = (): number => {
    seed = (seed + 0x6d2b79f5) | 0;
    let x = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    x = (x + Math.imul(x ^ (x >>> 7), 61 | x)) ^ x;
    return ((x ^ (x >>> 14)) >>> 0) / 4294967296;
  };
  const names = [...Object.keys(FLAGS), ...Object.keys(FLANNELD_REFUSED), 'bogus', ''];
  const values = ['', '0', '1', 'true', 'x', '-1', '99999999999999999999', '24d', '25d', '1h30m', '10.0.0.1', 'fe80::1%eth0', '::1', '(', '[', 'eth0', 'http://h:1', '127.0.0.1:1', '=', '--', '-'];
  const pick = <T>(a: readonly T[]): T => a[Math.floor(rand() * a.length)] as T;
  let configs = 0;
  let errors = 0;
  for (let i = 0; i < 3000; i++) {
    const argv: string[] = [];
    for (let j = Math.floor(rand() * 5); j > 0; j--) {
      const dash = pick(['-', '--', '']);
      const form = rand();
      if (form < 0.4) argv.push(`${dash}${pick(names)}=${pick(values)}`);
      else if (form < 0.8) argv.push(`${dash}${pick(names)}`, pick(values));
      else argv.push(`${dash}${pick(names)}`);
    }
    const env: NodeJS.ProcessEnv = {};
    for (let j = Math.floor(rand() * 3); j > 0; j--) env[pick([envName, flanneldEnvName])(pick(names))] = pick(values);
    try {
      parseDaemonArgs(argv, env);
      configs++;
    } catch (err) {
      if (!(err instanceof ConfigError)) {
        t.fail(`not a ConfigError for ${JSON.stringify(argv)} ${JSON.stringify(env)}: ${(err as Error).stack}`);
        return;
      }
      t.notMatch(err.message, /\n/);
      errors++;
    }
  }
  t.ok(configs > 100 && errors > 100, `both outcomes exercised (${configs} configs, ${errors} errors)`);
});
