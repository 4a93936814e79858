/**
 * Flags + environment + defaults -> one validated, typed Config. The flag list lives here
 * and only here (adding a flag is one FLAGS entry plus the line that reads it into Config).
 *
 * Sources, highest first: the command line (Go-style `-flag`/`--flag`, see cli-flags.ts);
 * `OVERLAYD_<FLAG>`; `FLANNELD_<FLAG>` for the flags flanneld has under the same name
 * (`flanneld: true`); the default. An empty `OVERLAYD_*` value counts as given (so
 * `OVERLAYD_METRICS_ADDR=` disables the HTTP server); an empty `FLANNELD_*` value is
 * ignored, as flanneld ignores it.
 */
import { isIPv6 } from 'node:net';
import { parseBoolText, parseFlags, type GivenFlags, type RefusedFlag } from './cli-flags';
import { ConfigError } from './errors';
import { isIp } from './net/addr';
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from './ops/log';
import { didYouMean } from './suggest';

export type EngineKind = 'js' | 'native';
export const ENGINES: readonly EngineKind[] = ['js', 'native'];

/** Most forwarding threads of the native engine (OVL_ENGINE_QUEUES_MAX in native/include/overlayd.h). */
export const QUEUES_MAX = 64;

/** Longest accepted duration, seconds: every duration ends up in a timer, and setTimeout holds at most 2^31-1 ms (24.8 days). */
export const DURATION_MAX_SECONDS = 24 * 86400;

/** Accepted range of a duration flag, in seconds; `unit` is the unit of a bare number. */
export interface DurationSpec {
  readonly unit: 's' | 'm';
  readonly min: number;
  readonly max: number;
}

type FlagType = 'string' | 'boolean';
interface FlagSpec {
  readonly type: FlagType;
  /** default as the user would type it; undefined = unset */
  readonly default?: string;
  readonly help: string;
  /** not read from the environment (e.g. --help) */
  readonly noEnv?: boolean;
  /** flanneld has this flag under this name: FLANNELD_<FLAG> is read too, --help marks it */
  readonly flanneld?: boolean;
  /** may be repeated; every value is kept, in order */
  readonly repeatable?: boolean;
  /** a duration (read it with getDuration): bounds and the unit of a bare number */
  readonly duration?: DurationSpec;
  /** a one-letter spelling (-h) */
  readonly alias?: string;
}

/** --ipv6-underlay values. */
export const IPV6_UNDERLAY_MODES = ['auto', 'ipv4'] as const;
export type Ipv6UnderlayMode = (typeof IPV6_UNDERLAY_MODES)[number];

/** Every daemon flag, in --help order. */
export const FLAGS = {
  'engine': { type: 'string', default: 'native', help: 'forwarding engine: native (C threads, the default) or js (node:dgram reference)' },
  'queues': { type: 'string', default: '1', help: `native engine: forwarding threads, each with its own TUN queue and UDP socket (1..${QUEUES_MAX})` },
  'tun-offload': { type: 'string', default: 'true', help: 'native engine: TUN offloads (IFF_VNET_HDR, TSO4/CSUM): read TCP super-packets and cut them here, coalesce inbound TCP segments into super-packets (true/false)' },
  'udp-gso': { type: 'string', default: 'true', help: 'native engine: send runs of datagrams to one peer as one UDP_SEGMENT message (the wire still carries one packet per datagram) (true/false)' },
  'icmp-ratelimit-rate': { type: 'string', default: '1000', help: 'ICMP errors (net unreachable, time exceeded) the engine may send per second, all queues together, after its burst; 0 = no limit (like net.ipv4.icmp_msgs_per_sec)' },
  'icmp-ratelimit-burst': { type: 'string', default: '50', help: 'ICMP errors the engine may send at once before --icmp-ratelimit-rate applies, at least 1 (like net.ipv4.icmp_msgs_burst)' },
  'udp-gro': { type: 'string', default: 'true', help: 'native engine: receive with UDP_GRO (several datagrams per receive, split here) (true/false)' },
  'partial-checksums': { type: 'boolean', default: 'false', help: 'native engine: between overlayd nodes that both run with this on, leave inner TCP/UDP checksums partial on the wire (the receiving kernel finishes them; the outer UDP checksum covers the bytes), advertised as BackendData {"PartialChecksums":true} in the lease; flannel and js-engine peers always get full checksums' },
  'static-config': { type: 'string', help: 'JSON file with Network, this node\'s Subnet/PublicIP and its Peers; replaces etcd' },
  'etcd-endpoints': { type: 'string', default: 'http://127.0.0.1:2379', flanneld: true, help: 'comma-separated etcd endpoints' },
  'etcd-prefix': { type: 'string', default: '/coreos.com/network', flanneld: true, help: 'etcd key prefix of the network config and leases' },
  'etcd-cafile': { type: 'string', flanneld: true, help: 'CA certificate file for etcd TLS' },
  'etcd-certfile': { type: 'string', flanneld: true, help: 'client certificate file for etcd TLS' },
  'etcd-keyfile': { type: 'string', flanneld: true, help: 'client key file for etcd TLS' },
  'etcd-username': { type: 'string', flanneld: true, help: 'etcd username' },
  'etcd-password': { type: 'string', flanneld: true, help: 'etcd password' },
  'etcd-resync-interval': { type: 'string', default: '3m', help: 'full re-list of the leases and the network config from etcd, besides the watch (10s..24h; 0 disables)' },
  'iface': { type: 'string', flanneld: true, repeatable: true, help: 'underlay interface name or address; repeat it to try several in order, the first that exists wins (default: the interface of the default route)' },
  'iface-regex': { type: 'string', flanneld: true, repeatable: true, help: 'regular expression matched against every interface\'s IPv4 addresses, then names; repeatable, tried in order after --iface' },
  'iface-can-reach': { type: 'string', flanneld: true, help: 'use the interface (and source address) of the route to this address (ip route get), tried after --iface and --iface-regex' },
  'public-ip': { type: 'string', flanneld: true, help: 'this node\'s address peers send to (default: the underlay interface\'s first IPv4 address)' },
  'public-ipv6': { type: 'string', flanneld: true, help: 'this node\'s IPv6 address peers send inner IPv6 to in a dual-stack network (EnableIPv6), written as PublicIPv6 in the lease (default: the underlay interface\'s first global IPv6 address)' },
  'ipv6-underlay': { type: 'string', default: 'auto', help: 'dual-stack: inner IPv6 rides the IPv6 underlay to a peer\'s PublicIPv6 when both ends have one (auto), or always IPv4 to its PublicIP (ipv4)' },
  'subnet-file': { type: 'string', default: '/run/flannel/subnet.env', flanneld: true, help: 'where to write the flannel subnet file' },
  'subnet-lease-ttl': { type: 'string', default: '24h', duration: { unit: 's', min: 10, max: DURATION_MAX_SECONDS }, help: 'TTL of the subnet lease in etcd (e.g. 24h, 90m, 600s)' },
  'subnet-lease-renew-margin': { type: 'string', default: '60', flanneld: true, duration: { unit: 'm', min: 60, max: 1439 * 60 }, help: 'renew the lease at the latest this long before it expires (a bare number is minutes, as flanneld); it is renewed every third of its TTL or earlier' },
  'tun-name': { type: 'string', default: 'flannel0', help: 'name of the TUN device' },
  'ip-masq': { type: 'boolean', default: 'false', flanneld: true, help: 'masquerade traffic from pods to destinations outside the cluster Network (flanneld\'s rule set, nftables table ip overlayd)' },
  'ip-masq-fully-random-disable': { type: 'boolean', default: 'false', flanneld: true, help: 'masquerade without fully-random port selection' },
  'iptables-forward-rules': { type: 'boolean', default: 'true', flanneld: true, help: 'accept the Network\'s traffic in every FORWARD chain whose policy is drop (iptables-legacy, iptables-nft or nftables)' },
  'iptables-resync': { type: 'string', default: '5', flanneld: true, duration: { unit: 's', min: 1, max: 3600 }, help: 'seconds between checks of the FORWARD and masquerade rules; missing ones are put back' },
  'metrics-addr': { type: 'string', default: '127.0.0.1:9285', help: 'HTTP address for /metrics, /healthz and /status (empty disables)' },
  'healthz-ip': { type: 'string', default: '0.0.0.0', flanneld: true, help: 'with --healthz-port: the address of the HTTP server (/healthz, /metrics, /status) instead of --metrics-addr' },
  'healthz-port': { type: 'string', default: '0', flanneld: true, help: 'port of flanneld\'s health endpoint: when not 0, the HTTP server listens on --healthz-ip:--healthz-port (0: --metrics-addr decides)' },
  'log-level': { type: 'string', default: 'info', help: `log level: ${LOG_LEVELS.join(', ')}` },
  'log-format': { type: 'string', default: 'json', help: 'log format: json (one JSON object per line) or text (time, level, message and fields on one line)' },
  'v': { type: 'string', default: '0', flanneld: true, help: 'flanneld\'s (klog) verbosity: 0 = --log-level info, 1..4 = debug, 5 and more = trace; --log-level wins when both come from the same source' },
  'help': { type: 'boolean', alias: 'h', help: 'print this help and exit', noEnv: true },
  'version': { type: 'boolean', help: 'print the version and exit', noEnv: true },
} as const satisfies Record<string, FlagSpec>;

export type FlagName = keyof typeof FLAGS;

const NOT_KUBE = 'overlayd has no Kubernetes subnet manager; it leases subnets from etcd (--etcd-endpoints) or takes them from --static-config';

/** flanneld's flags that cannot apply here, each with the reason --help and the error give. */
export const FLANNELD_REFUSED: Readonly<Record<string, RefusedFlag>> = {
  'kube-subnet-mgr': { type: 'boolean', reason: NOT_KUBE },
  'kube-api-url': { type: 'string', reason: `only used by flanneld's --kube-subnet-mgr: ${NOT_KUBE}` },
  'kube-annotation-prefix': { type: 'string', reason: `only used by flanneld's --kube-subnet-mgr: ${NOT_KUBE}` },
  'kubeconfig-file': { type: 'string', reason: `only used by flanneld's --kube-subnet-mgr: ${NOT_KUBE}` },
  'net-config-path': { type: 'string', reason: `only used by flanneld's --kube-subnet-mgr (the network config is read from <etcd-prefix>/config or --static-config): ${NOT_KUBE}` },
  'set-node-network-unavailable': { type: 'boolean', reason: `only used by flanneld's --kube-subnet-mgr: ${NOT_KUBE}` },
  'ip-blackhole-route': { type: 'boolean', reason: 'overlayd does not install a blackhole route for its subnet' },
  'vmodule': { type: 'string', reason: 'overlayd has no per-file verbosity; use -v N or --log-level' },
  'log_backtrace_at': { type: 'string', reason: 'overlayd does not log klog backtraces; use --log-level debug' },
};

/** Variables with the OVERLAYD_ prefix that are not flags (read elsewhere). */
const OTHER_ENV: readonly string[] = ['OVERLAYD_ADDON'];

export function envName(flag: string): string {
  return `OVERLAYD_${flag.toUpperCase().replace(/-/g, '_')}`;
}

/** flanneld's variable for a flag (coreos/pkg/flagutil.SetFlagsFromEnv with prefix FLANNELD). */
export function flanneldEnvName(flag: string): string {
  return `FLANNELD_${flag.toUpperCase().replace(/-/g, '_')}`;
}

export interface EtcdConnection {
  readonly endpoints: string[];
  readonly prefix: string;
  readonly cafile?: string;
  readonly certfile?: string;
  readonly keyfile?: string;
  readonly username?: string;
  readonly password?: string;
}

/** Offloads of the native engine asked for (each falls back by itself where the kernel refuses it). */
export interface OffloadConfig {
  readonly tun: boolean;
  readonly udpGso: boolean;
  readonly udpGro: boolean;
}

/** How to pick the underlay interface (flanneld's order: iface, then iface-regex, then iface-can-reach). */
export interface UnderlaySelection {
  /** names or IPv4 addresses, tried in order; the first that exists wins */
  readonly iface: readonly string[];
  /** regular expressions (JavaScript syntax, which covers Go's RE2 for such patterns), tried in order */
  readonly ifaceRegex: readonly string[];
  /** an IPv4 address: the interface of the route to it */
  readonly ifaceCanReach?: string;
}

export interface Config extends UnderlaySelection {
  readonly engine: EngineKind;
  /** native engine offloads (the js engine has none) */
  readonly offloads: OffloadConfig;
  /**
   * --partial-checksums: advertise (lease BackendData) and use partial inner checksums with
   * peers that advertise them too; native engine only
   */
  readonly partialChecksums: boolean;
  /** forwarding threads of the native engine (1 for js) */
  readonly queues: number;
  /** ICMP error token bucket of the engine: rate per second (0 = no limit) and burst (>= 1) */
  readonly icmpRateLimit: { readonly rate: number; readonly burst: number };
  readonly staticConfig?: string;
  readonly etcd: EtcdConnection;
  readonly publicIp?: string;
  /** --public-ipv6 in canonical text (RFC 5952, as Go's net.IP prints it); PublicIPv6 of a dual-stack lease */
  readonly publicIpv6?: string;
  /** --ipv6-underlay: auto (IPv6 underlay when both ends have a PublicIPv6) or ipv4 */
  readonly ipv6Underlay: Ipv6UnderlayMode;
  readonly subnetFile: string;
  /** seconds */
  readonly subnetLeaseTtl: number;
  /** seconds; undefined when not given (the renewal every TTL/3 alone decides) */
  readonly subnetLeaseRenewMargin?: number;
  /** --etcd-resync-interval, seconds; 0: no periodic re-list */
  readonly etcdResyncInterval: number;
  readonly tunName: string;
  readonly ipMasq: boolean;
  /** masquerade fully-random unless --ip-masq-fully-random-disable */
  readonly ipMasqFullyRandomDisable: boolean;
  /** FORWARD accept rules for the Network (flanneld's --iptables-forward-rules) */
  readonly iptablesForwardRules: boolean;
  /** seconds between firewall checks, 1..3600 */
  readonly iptablesResync: number;
  /** host:port, or undefined when disabled */
  readonly metricsAddr?: { host: string; port: number };
  readonly logLevel: LogLevel;
  readonly logFormat: LogFormat;
}

export type ParsedCommand =
  | { kind: 'help' }
  | { kind: 'version' }
  /** warnings: lines to log once a logger exists (unknown OVERLAYD_ and FLANNELD_ variables) */
  | { kind: 'daemon'; config: Config; warnings: string[] };

const UNIT_SECONDS = { s: 1, m: 60, h: 3600, d: 86400 } as const;

/** "24d", "90m", "10s": the largest unit that divides `seconds`. */
export function formatDuration(seconds: number): string {
  for (const [u, n] of [['d', 86400], ['h', 3600], ['m', 60]] as const) {
    if (seconds % n === 0 && seconds >= n) return `${seconds / n}${u}`;
  }
  return `${seconds}s`;
}

/**
 * Parses a duration into whole seconds: "24h", "90m", "1h30m", "600s", "2d", or a bare number
 * in `spec.unit`. Out of [spec.min, spec.max] is a ConfigError naming `label` and the range.
 */
export function parseDuration(label: string, value: string, spec: DurationSpec = { unit: 's', min: 1, max: DURATION_MAX_SECONDS }): number {
  const text = value.trim();
  let n: number;
  if (/^\d+$/.test(text)) {
    n = Number(text) * UNIT_SECONDS[spec.unit];
  } else if (/^(\d+[smhd])+$/.test(text)) {
    n = 0;
    for (const m of text.matchAll(/(\d+)([smhd])/g)) n += Number(m[1]) * UNIT_SECONDS[m[2] as keyof typeof UNIT_SECONDS];
  } else {
    throw new ConfigError(`${label}: "${value}" is not a duration (examples: 24h, 90m, 1h30m, 600s${spec.unit === 'm' ? '; a bare number is minutes' : ''})`);
  }
  if (!Number.isSafeInteger(n) || n < spec.min || n > spec.max) {
    throw new ConfigError(`${label}: ${text} is out of range: ${formatDuration(spec.min)}..${formatDuration(spec.max)}`);
  }
  return n;
}

/** --etcd-resync-interval: 0 disables the periodic re-list, else 10s..24h. */
function parseResyncInterval(label: string, value: string): number {
  if (/^0+[smhd]?$/.test(value.trim())) return 0;
  return parseDuration(label, value, { unit: 's', min: 10, max: 86400 });
}

/** Parses "host:port" ("[::1]:9285" too). */
export function parseHostPort(flag: string, value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 0 || port > 65535) throw new ConfigError(`--${flag}: "${value}" is not host:port`);
  return { host: (m[1] ?? m[2]) as string, port };
}

/** Canonical IPv6 text (lower case, longest zero run compressed), or undefined when `s` is not IPv6. */
function canonicalIpv6(s: string): string | undefined {
  // no zone (fe80::1%eth0) and no IPv4-mapped form (::ffff:a.b.c.d is an IPv4 address to Go)
  if (!isIPv6(s) || s.includes('%') || /^::ffff:/i.test(s)) return undefined;
  return new URL(`http://[${s}]/`).hostname.slice(1, -1);
}

const IFNAME = /^[A-Za-z0-9_.:-]{1,15}$/;

/** Where a value came from, highest precedence first. */
type Origin = 'command line' | 'OVERLAYD' | 'FLANNELD' | 'default';
interface Setting {
  /** every value given by the winning source (one, unless repeatable and from the command line) */
  readonly values: readonly string[];
  readonly origin: Origin;
  /** "--flag" or "--flag (OVERLAYD_FLAG)", for messages */
  readonly label: string;
}

/** Resolves one flag from the sources in precedence order (strings; booleans as their text). */
function resolve(flag: FlagName, given: GivenFlags, env: NodeJS.ProcessEnv): Setting {
  const spec: FlagSpec = FLAGS[flag];
  const name = `${flag.length === 1 ? '-' : '--'}${flag}`; // as --help spells it (-v)
  const g = given.get(flag);
  if (g !== undefined) return { values: Array.isArray(g) ? g : [String(g)], origin: 'command line', label: name };
  if (!spec.noEnv) {
    const o = env[envName(flag)];
    if (o !== undefined) return { values: [o], origin: 'OVERLAYD', label: `${name} (${envName(flag)})` };
    const f = spec.flanneld ? env[flanneldEnvName(flag)] : undefined;
    if (f !== undefined && f !== '') return { values: [f], origin: 'FLANNELD', label: `${name} (${flanneldEnvName(flag)})` };
  }
  return { values: spec.default === undefined ? [] : [spec.default], origin: 'default', label: name };
}

/** One line per variable with our prefixes that no flag reads, with the nearest known name. */
export function unknownEnvWarnings(env: NodeJS.ProcessEnv): string[] {
  const known = new Set<string>(OTHER_ENV);
  for (const [name, spec] of Object.entries(FLAGS) as [string, FlagSpec][]) {
    if (spec.noEnv) continue;
    known.add(envName(name));
    if (spec.flanneld) known.add(flanneldEnvName(name));
  }
  for (const name of Object.keys(FLANNELD_REFUSED)) known.add(flanneldEnvName(name));
  const out: string[] = [];
  for (const name of Object.keys(env).sort()) {
    if (!/^(OVERLAYD|FLANNELD)_/.test(name) || known.has(name)) continue;
    out.push(`environment variable ${name} is not one overlayd reads; ignored${didYouMean(name, known, false)}`);
  }
  return out;
}

/** flanneld's variables for flags overlayd refuses: a ConfigError when one asks for something. */
function checkRefusedEnv(env: NodeJS.ProcessEnv): void {
  for (const [name, r] of Object.entries(FLANNELD_REFUSED)) {
    const v = env[flanneldEnvName(name)];
    if (v === undefined || v === '' || (r.type === 'boolean' && parseBoolText(v) === false)) continue;
    throw new ConfigError(`${flanneldEnvName(name)} (--${name}) is not supported: ${r.reason}`);
  }
}

/** Maps klog's -v N onto a log level: 0 info, 1..4 debug, 5+ trace. */
export function verbosityLevel(v: number): LogLevel {
  return v <= 0 ? 'info' : v < 5 ? 'debug' : 'trace';
}

/** Turns argv (after the subcommand) and the environment into a validated command. */
export function parseDaemonArgs(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ParsedCommand {
  const given = parseFlags(argv, FLAGS, FLANNELD_REFUSED);
  if (given.get('help') === true) return { kind: 'help' };
  if (given.get('version') === true) return { kind: 'version' };
  checkRefusedEnv(env);

  const setting = (flag: FlagName): Setting => resolve(flag, given, env);
  const get = (flag: FlagName): string | undefined => setting(flag).values.at(-1);
  const getList = (flag: FlagName): string[] => setting(flag).values.filter((v) => v !== '');
  const getBool = (flag: FlagName): boolean => {
    const s = setting(flag);
    const text = s.values.at(-1);
    const spec: FlagSpec = FLAGS[flag];
    // an empty variable means "not set": the default
    const b = parseBoolText(text === '' || text === undefined ? spec.default ?? 'false' : text);
    if (b === undefined) throw new ConfigError(`${s.label}: "${text}" is not a boolean (true/false)`);
    return b;
  };
  /** a string flag holding a boolean, so that a default of true can be turned off with a separate value */
  const getOnOff = (flag: FlagName): boolean => {
    const s = setting(flag);
    const v = (s.values.at(-1) ?? '').trim();
    const b = parseBoolText(v);
    if (b === undefined) throw new ConfigError(`${s.label}: "${v}" is not a boolean (true/false)`);
    return b;
  };
  const getOpt = (flag: FlagName): string | undefined => {
    const v = get(flag);
    return v === undefined || v === '' ? undefined : v;
  };
  const getDuration = (flag: FlagName): number => {
    const spec: FlagSpec = FLAGS[flag];
    if (!spec.duration) throw new Error(`--${flag} is not a duration flag`);
    const s = setting(flag);
    return parseDuration(s.label, s.values.at(-1) ?? '', spec.duration);
  };
  const getInt = (flag: FlagName, min: number, max: number): number => {
    const s = setting(flag);
    const text = (s.values.at(-1) ?? '').trim();
    const n = /^\d{1,10}$/.test(text) ? Number(text) : NaN;
    if (!(n >= min && n <= max)) throw new ConfigError(`${s.label}: "${text}" is not a whole number in ${min}..${max}`);
    return n;
  };

  const oneOf = <T extends string>(flag: FlagName, allowed: readonly T[]): T => {
    const v = get(flag) as string;
    if (!(allowed as readonly string[]).includes(v)) throw new ConfigError(`--${flag} (${envName(flag)}): "${v}" is not one of ${allowed.join(', ')}`);
    return v as T;
  };

  const engine = get('engine') as string;
  if (!(ENGINES as readonly string[]).includes(engine)) throw new ConfigError(`--engine: "${engine}" is not one of ${ENGINES.join(', ')}`);
  const queuesText = (get('queues') as string).trim();
  const queues = /^\d{1,3}$/.test(queuesText) ? Number(queuesText) : NaN;
  if (!(queues >= 1 && queues <= QUEUES_MAX)) throw new ConfigError(`--queues: "${queuesText}" is not a number of threads in 1..${QUEUES_MAX}`);
  if (queues > 1 && engine !== 'native') throw new ConfigError(`--queues ${queues}: only the native engine has more than one forwarding thread (--engine native)`);
  const partialChecksums = getBool('partial-checksums');
  if (partialChecksums && engine !== 'native') {
    throw new ConfigError(`${setting('partial-checksums').label}: only the native engine takes partial checksums from peers (--engine native); the js engine always sends and expects full ones`);
  }

  // --log-level and -v are two spellings of one setting: the higher source wins, --log-level on a tie
  const levelSetting = setting('log-level');
  const vSetting = setting('v');
  const rank = (o: Origin): number => ['default', 'FLANNELD', 'OVERLAYD', 'command line'].indexOf(o);
  let logLevel: string;
  if (rank(vSetting.origin) > rank(levelSetting.origin)) {
    logLevel = verbosityLevel(getInt('v', 0, 1_000_000));
  } else {
    logLevel = levelSetting.values.at(-1) as string;
    if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) throw new ConfigError(`${levelSetting.label}: "${logLevel}" is not one of ${LOG_LEVELS.join(', ')}`);
  }
  const icmpRateLimit = { rate: getInt('icmp-ratelimit-rate', 0, 0xffffffff), burst: getInt('icmp-ratelimit-burst', 1, 0xffffffff) };

  const endpoints = (get('etcd-endpoints') as string).split(',').map((s) => s.trim()).filter((s) => s !== '');
  if (endpoints.length === 0) throw new ConfigError('--etcd-endpoints: no endpoint given');
  for (const ep of endpoints) {
    if (!/^(https?:\/\/)?[^\s/]+:\d{1,5}\/?$/.test(ep)) throw new ConfigError(`--etcd-endpoints: "${ep}" is not an endpoint like http://127.0.0.1:2379`);
  }
  const prefix = get('etcd-prefix') as string;
  if (!prefix.startsWith('/') || prefix.endsWith('/') && prefix !== '/') throw new ConfigError(`--etcd-prefix: "${prefix}" must start with "/" and not end with "/"`);
  const certfile = getOpt('etcd-certfile');
  const keyfile = getOpt('etcd-keyfile');
  if ((certfile === undefined) !== (keyfile === undefined)) throw new ConfigError('--etcd-certfile and --etcd-keyfile must be given together');

  const publicIp = getOpt('public-ip');
  if (publicIp !== undefined && !isIp(publicIp)) throw new ConfigError(`--public-ip: "${publicIp}" is not an IPv4 address`);
  const publicIpv6Text = getOpt('public-ipv6');
  const publicIpv6 = publicIpv6Text === undefined ? undefined : canonicalIpv6(publicIpv6Text);
  if (publicIpv6Text !== undefined && publicIpv6 === undefined) throw new ConfigError(`--public-ipv6: "${publicIpv6Text}" is not an IPv6 address`);
  const iface = getList('iface');
  for (const i of iface) {
    if (!isIp(i) && !IFNAME.test(i)) throw new ConfigError(`--iface: "${i}" is neither an interface name nor an IPv4 address`);
  }
  const ifaceRegex = getList('iface-regex');
  for (const r of ifaceRegex) {
    try {
      new RegExp(r);
    } catch (err) {
      throw new ConfigError(`--iface-regex: "${r}" is not a regular expression (${(err as Error).message})`);
    }
  }
  const ifaceCanReach = getOpt('iface-can-reach');
  if (ifaceCanReach !== undefined && !isIp(ifaceCanReach)) throw new ConfigError(`--iface-can-reach: "${ifaceCanReach}" is not an IPv4 address`);
  const tunName = get('tun-name') as string;
  if (!IFNAME.test(tunName)) throw new ConfigError(`--tun-name: "${tunName}" is not a valid interface name (1-15 characters of A-Z a-z 0-9 _ . : -)`);
  const subnetFile = get('subnet-file') as string;
  if (subnetFile === '' || subnetFile.endsWith('/')) throw new ConfigError(`--subnet-file: "${subnetFile}" is not a file path`);

  const subnetLeaseTtl = getDuration('subnet-lease-ttl');
  const marginSetting = setting('subnet-lease-renew-margin');
  const margin = getDuration('subnet-lease-renew-margin');
  let subnetLeaseRenewMargin: number | undefined;
  if (marginSetting.origin !== 'default') {
    if (margin >= subnetLeaseTtl) {
      throw new ConfigError(`${marginSetting.label}: ${formatDuration(margin)} must be shorter than --subnet-lease-ttl ${formatDuration(subnetLeaseTtl)}`);
    }
    subnetLeaseRenewMargin = margin;
  }

  // flanneld's health endpoint is overlayd's one HTTP server (it serves /healthz too)
  const metricsSetting = setting('metrics-addr');
  const metricsText = getOpt('metrics-addr');
  let metricsAddr = metricsText === undefined ? undefined : parseHostPort('metrics-addr', metricsText);
  const healthzPort = getInt('healthz-port', 0, 65535);
  if (healthzPort !== 0) {
    const ipSetting = setting('healthz-ip');
    const host = (ipSetting.values.at(-1) ?? '').trim();
    if (!isIp(host) && !isIPv6(host)) throw new ConfigError(`${ipSetting.label}: "${host}" is not an IP address`);
    const healthz = { host, port: healthzPort };
    if (metricsSetting.origin !== 'default' && metricsAddr !== undefined && (metricsAddr.host !== host || metricsAddr.port !== healthzPort)) {
      throw new ConfigError(`${setting('healthz-port').label} and ${metricsSetting.label} name two addresses; overlayd has one HTTP server (/healthz, /metrics, /status): give one of them`);
    }
    metricsAddr = healthz;
  }

  const config: Config = {
    engine: engine as EngineKind,
    queues,
    icmpRateLimit,
    offloads: { tun: getOnOff('tun-offload'), udpGso: getOnOff('udp-gso'), udpGro: getOnOff('udp-gro') },
    partialChecksums,
    staticConfig: getOpt('static-config'),
    etcd: {
      endpoints,
      prefix,
      cafile: getOpt('etcd-cafile'),
      certfile,
      keyfile,
      username: getOpt('etcd-username'),
      password: getOpt('etcd-password'),
    },
    iface,
    ifaceRegex,
    ifaceCanReach,
    publicIp,
    publicIpv6,
    ipv6Underlay: oneOf('ipv6-underlay', IPV6_UNDERLAY_MODES),
    subnetFile,
    subnetLeaseTtl,
    subnetLeaseRenewMargin,
    etcdResyncInterval: parseResyncInterval(setting('etcd-resync-interval').label, get('etcd-resync-interval') as string),
    tunName,
    ipMasq: getBool('ip-masq'),
    ipMasqFullyRandomDisable: getBool('ip-masq-fully-random-disable'),
    iptablesForwardRules: getBool('iptables-forward-rules'),
    iptablesResync: getDuration('iptables-resync'),
    metricsAddr,
    logLevel: logLevel as LogLevel,
    logFormat: oneOf('log-format', LOG_FORMATS),
  };
  return { kind: 'daemon', config, warnings: unknownEnvWarnings(env) };
}

/**
 * The lease renewal interval, ms: every third of the TTL, or earlier so that at least
 * --subnet-lease-renew-margin is left when it is given. Undefined: the lease keeper's default (TTL/3).
 */
export function leaseRenewIntervalMs(c: Pick<Config, 'subnetLeaseTtl' | 'subnetLeaseRenewMargin'>): number | undefined {
  if (c.subnetLeaseRenewMargin === undefined) return undefined;
  return Math.min(Math.floor((c.subnetLeaseTtl * 1000) / 3), (c.subnetLeaseTtl - c.subnetLeaseRenewMargin) * 1000);
}

/** The --help text: every flag with its environment variables and default, and flanneld's refused flags. */
export function helpText(): string {
  const lines = [
    'usage: overlayd [flags]            run the daemon',
    '       overlayd status [flags]     ask the running daemon of this network namespace (overlayd status --help)',
    '       overlayd version            print the version',
    '',
    'Flags are written -flag or --flag, with the value after "=" or as the next argument; a boolean',
    'is set by -flag alone or -flag=true/false. Precedence: command line > OVERLAYD_* > FLANNELD_*',
    '(only for flanneld\'s flags, marked [flanneld]) > default.',
    '',
    'flags:',
  ];
  for (const [name, spec] of Object.entries(FLAGS) as [string, FlagSpec][]) {
    const range = spec.duration ? ` (range ${formatDuration(spec.duration.min)}..${formatDuration(spec.duration.max)})` : '';
    const def = `${range}${spec.default !== undefined ? ` (default ${JSON.stringify(spec.default)})` : ''}`;
    const vars = spec.noEnv ? [] : [envName(name), ...(spec.flanneld ? [flanneldEnvName(name)] : [])];
    const env = vars.length ? `  [${vars.join(', ')}]` : '';
    const names = [`${name.length === 1 ? '-' : '--'}${name}`, ...(spec.alias ? [`-${spec.alias}`] : [])].join(', ');
    const marks = [spec.type === 'string' ? ' VALUE' : '', spec.repeatable ? ' (repeatable)' : '', spec.flanneld ? '  [flanneld]' : ''].join('');
    lines.push(`  ${names}${marks}`, `      ${spec.help}${def}${env}`);
  }
  lines.push('', 'flanneld flags that cannot apply here (refused, exit 2):');
  for (const [name, r] of Object.entries(FLANNELD_REFUSED)) lines.push(`  --${name}: ${r.reason}`);
  return lines.join('\n') + '\n';
}

/** The text of systemd/overlayd.env: every variable, commented out, at its default. */
export function envFileText(): string {
  const lines = [
    '# overlayd environment file (systemd EnvironmentFile=/etc/overlayd/overlayd.env).',
    '# Every variable is shown at its default, commented out; a command-line flag wins over it.',
    '',
  ];
  for (const [name, spec] of Object.entries(FLAGS) as [string, FlagSpec][]) {
    if (spec.noEnv) continue;
    lines.push(`# --${name}: ${spec.help}`, `#${envName(name)}=${spec.default ?? ''}`, '');
  }
  return lines.join('\n');
}
