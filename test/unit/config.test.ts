import t from 'tap';
import { parseDaemonArgs, helpText, FLAGS, envName, parseDuration, DURATION_MAX_SECONDS, type Config } from '../../src/config';
import { ConfigError } from '../../src/errors';

function daemonConfig(argv: string[], env: NodeJS.ProcessEnv = {}): Config {
  const r = parseDaemonArgs(argv, env);
  if (r.kind !== 'daemon') throw new Error(`expected daemon, got ${r.kind}`);
  return r.config;
}

t.test('defaults match flannel', async (t) => {
  const c = daemonConfig([]);
  t.same(c.etcd.endpoints, ['http://127.0.0.1:2379']);
  t.equal(c.etcd.prefix, '/coreos.com/network');
  t.equal(c.subnetFile, '/run/flannel/subnet.env');
  t.equal(c.tunName, 'flannel0');
  t.equal(c.subnetLeaseTtl, 86400);
  t.same(c.metricsAddr, { host: '127.0.0.1', port: 9285 });
  t.equal(c.staticConfig, undefined);
});

t.test('every flag is also an OVERLAYD_ environment variable; the flag wins', async (t) => {
  t.equal(envName('etcd-endpoints'), 'OVERLAYD_ETCD_ENDPOINTS');
  const env = {
    OVERLAYD_ETCD_ENDPOINTS: 'http://10.0.0.1:2379, https://10.0.0.2:2379',
    OVERLAYD_ETCD_PREFIX: '/x/net',
    OVERLAYD_TUN_NAME: 'ovl0',
    OVERLAYD_SUBNET_LEASE_TTL: '90m',
    OVERLAYD_METRICS_ADDR: '',
  };
  const c = daemonConfig([], env);
  t.same(c.etcd.endpoints, ['http://10.0.0.1:2379', 'https://10.0.0.2:2379']);
  t.equal(c.etcd.prefix, '/x/net');
  t.equal(c.tunName, 'ovl0');
  t.equal(c.subnetLeaseTtl, 5400);
  t.equal(c.metricsAddr, undefined, 'empty disables');
  t.equal(daemonConfig(['--tun-name', 'tun7'], env).tunName, 'tun7');
});

t.test('bad values are ConfigErrors naming the flag', async (t) => {
  const cases: [string[], RegExp][] = [
    [['--engine', 'turbo'], /--engine/],
    [['--log-level', 'loud'], /--log-level/],
    [['--public-ip', '10.0.0.300'], /--public-ip/],
    [['--iface', 'this-name-is-way-too-long'], /--iface/],
    [['--tun-name', 'a/b'], /--tun-name/],
    [['--etcd-endpoints', ' , '], /--etcd-endpoints/],
    [['--etcd-endpoints', 'not an endpoint'], /--etcd-endpoints/],
    [['--etcd-prefix', 'no-slash'], /--etcd-prefix/],
    [['--etcd-certfile', '/c.pem'], /--etcd-keyfile/],
    [['--subnet-lease-ttl', 'forever'], /--subnet-lease-ttl/],
    [['--metrics-addr', 'localhost'], /--metrics-addr/],
    [['--no-such-flag'], /no-such-flag/],
  ];
  for (const [argv, re] of cases) {
    t.throws(() => parseDaemonArgs(argv, {}), ConfigError, argv.join(' '));
    t.throws(() => parseDaemonArgs(argv, {}), re, argv.join(' '));
  }
});

t.test('durations', async (t) => {
  t.equal(parseDuration('x', '24h'), 86400);
  t.equal(parseDuration('x', '600'), 600);
  t.equal(parseDuration('x', '2d'), 172800);
  t.equal(parseDuration('x', '1h30m'), 5400);
  t.equal(parseDuration('x', '90', { unit: 'm', min: 60, max: 86340 }), 5400, 'a bare number in the flag\'s unit');
  t.throws(() => parseDuration('--x', '5s', { unit: 's', min: 10, max: 100 }), /^--x: 5s is out of range: 10s\.\.100s$/);
  t.throws(() => parseDuration('--x', '1.5h'), /--x: "1\.5h" is not a duration/);
  t.throws(() => parseDuration('--x', '-5'), /not a duration/);
});

t.test('bounds: every duration flag refuses what a timer cannot hold, naming the flag and the range', async (t) => {
  // setTimeout holds at most 2^31-1 ms; a longer delay fires after 1 ms
  t.ok(DURATION_MAX_SECONDS * 1000 <= 2 ** 31 - 1);
  const durationFlags = Object.entries(FLAGS).filter(([, spec]) => 'duration' in spec).map(([name]) => name);
  t.ok(durationFlags.includes('subnet-lease-ttl') && durationFlags.includes('iptables-resync') && durationFlags.includes('subnet-lease-renew-margin'));
  for (const flag of durationFlags) {
    t.throws(() => parseDaemonArgs([`--${flag}`, '25d'], {}), new RegExp(`^--${flag}: 25d is out of range: \\d+[smhd]\\.\\.\\d+[smhd]$`), flag);
    t.throws(() => parseDaemonArgs([`--${flag}`, '0'], {}), new RegExp(`^--${flag}: 0 is out of range`), flag);
    t.throws(() => parseDaemonArgs([`--${flag}`, '99999999999999999999d'], {}), /out of range/, `${flag}: beyond a safe integer`);
    t.throws(() => parseDaemonArgs([], { [envName(flag)]: '25d' }), new RegExp(`^--${flag} \\(${envName(flag)}\\): 25d is out of range`), `${flag} from the environment`);
  }
  t.throws(() => parseDaemonArgs(['--subnet-lease-ttl', '2147484s'], {}), /--subnet-lease-ttl: 2147484s is out of range: 10s\.\.24d/, 'the report: a TTL above 2^31-1 ms');
  t.equal(daemonConfig(['--subnet-lease-ttl', '24d']).subnetLeaseTtl, 24 * 86400);
  t.equal(daemonConfig(['--subnet-lease-ttl', '10s']).subnetLeaseTtl, 10);
  t.throws(() => parseDaemonArgs(['--subnet-lease-ttl', '9s'], {}), /out of range: 10s\.\.24d/);
});

t.test('--help lists every flag with its default and variable', async (t) => {
  t.equal(parseDaemonArgs(['--help'], {}).kind, 'help');
  const text = helpText();
  for (const [name, spec] of Object.entries(FLAGS)) {
    t.match(text, `--${name}`);
    if ('default' in spec) t.match(text, `(default ${JSON.stringify(spec.default)})`);
  }
  t.match(text, 'OVERLAYD_ETCD_CAFILE');
});

t.test('offload switches: on by default, each off by flag or environment, booleans only', async (t) => {
  t.same(daemonConfig([]).offloads, { tun: true, udpGso: true, udpGro: true });
  t.same(daemonConfig(['--tun-offload', 'false']).offloads, { tun: false, udpGso: true, udpGro: true });
  t.same(daemonConfig(['--udp-gso=0', '--udp-gro', 'off']).offloads, { tun: true, udpGso: false, udpGro: false });
  t.same(daemonConfig([], { OVERLAYD_TUN_OFFLOAD: 'false', OVERLAYD_UDP_GSO: 'no', OVERLAYD_UDP_GRO: 'FALSE' }).offloads, { tun: false, udpGso: false, udpGro: false });
  t.same(daemonConfig(['--udp-gro', 'true'], { OVERLAYD_UDP_GRO: 'false' }).offloads.udpGro, true, 'the flag wins');
  t.throws(() => daemonConfig(['--udp-gso', 'maybe']), ConfigError);
  t.throws(() => daemonConfig([], { OVERLAYD_TUN_OFFLOAD: '2' }), /OVERLAYD_TUN_OFFLOAD.*not a boolean/);
});

t.test('--partial-checksums: off by default, on by flag or OVERLAYD_PARTIAL_CHECKSUMS, native engine only', async (t) => {
  t.equal(daemonConfig([]).partialChecksums, false, 'off by default: leases stay flannel\'s udp values');
  t.equal(daemonConfig(['--partial-checksums']).partialChecksums, true);
  t.equal(daemonConfig([], { OVERLAYD_PARTIAL_CHECKSUMS: 'true' }).partialChecksums, true);
  t.throws(() => daemonConfig(['--partial-checksums', '--engine', 'js']), /--partial-checksums: only the native engine/);
  t.throws(() => daemonConfig(['--engine', 'js'], { OVERLAYD_PARTIAL_CHECKSUMS: '1' }), /\(OVERLAYD_PARTIAL_CHECKSUMS\): only the native engine/);
  t.throws(() => daemonConfig([], { OVERLAYD_PARTIAL_CHECKSUMS: 'maybe' }), /OVERLAYD_PARTIAL_CHECKSUMS.*not a boolean/);
});
