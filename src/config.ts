/**
 * Flags + environment + defaults -> one validated, typed Config. The flag list lives here
 * and only here: every flag `--foo-bar` is also read from `OVERLAYD_FOO_BAR`; a flag on the
 * command line wins over the environment, which wins over the default.
 */
import { parseArgs } from 'node:util';
import { ConfigError } from './errors';
import { isIp } from './net/addr';
import { LOG_FORMATS, LOG_LEVELS, type LogFormat, type LogLevel } from './ops/log';

export type EngineKind = 'js' | 'native';
export const ENGINES: readonly EngineKind[] = ['js', 'native'];

/** Most forwarding threads of the native engine (OVL_ENGINE_QUEUES_MAX in native/include/overlayd.h). */
export const QUEUES_MAX = 64;

type FlagType = 'string' | 'boolean';
interface FlagSpec {
  readonly type: FlagType;
  /** default as the user would type it; undefined = unset */
  readonly default?: string;
  readonly help: string;
  /** not read from the environment (e.g. --help) */
  readonly noEnv?: boolean;
}

/** Every daemon flag, in --help order. */
export const FLAGS = {
  'engine': { type: 'string', default: 'native', help: 'forwarding engine: native (C threads, the default) or js (node:dgram reference)' },
  'queues': { type: 'string', default: '1', help: `native engine: forwarding threads, each with its own TUN queue and UDP socket (1..${QUEUES_MAX})` },
  'tun-offload': { type: 'string', default: 'true', help: 'native engine: TUN offloads (IFF_VNET_HDR, TSO4/CSUM): read TCP super-packets and cut them here, coalesce inbound TCP segments into super-packets (true/false)' },
  'udp-gso': { type: 'string', default: 'true', help: 'native engine: send runs of datagrams to one peer as one UDP_SEGMENT message (the wire still carries one packet per datagram) (true/false)' },
  'udp-gro': { type: 'string', default: 'true', help: 'native engine: receive with UDP_GRO (several datagrams per receive, split here) (true/false)' },
  'static-config': { type: 'string', help: 'JSON file with Network, this node\'s Subnet/PublicIP and its Peers; replaces etcd' },
  'etcd-endpoints': { type: 'string', default: 'http://127.0.0.1:2379', help: 'comma-separated etcd endpoints' },
  'etcd-prefix': { type: 'string', default: '/coreos.com/network', help: 'etcd key prefix of the network config and leases' },
  'etcd-cafile': { type: 'string', help: 'CA certificate file for etcd TLS' },
  'etcd-certfile': { type: 'string', help: 'client certificate file for etcd TLS' },
  'etcd-keyfile': { type: 'string', help: 'client key file for etcd TLS' },
  'etcd-username': { type: 'string', help: 'etcd username' },
  'etcd-password': { type: 'string', help: 'etcd password' },
  'iface': { type: 'string', help: 'underlay interface name or address (default: the interface of the default route)' },
  'public-ip': { type: 'string', help: 'this node\'s address peers send to (default: the underlay interface\'s first IPv4 address)' },
  'subnet-file': { type: 'string', default: '/run/flannel/subnet.env', help: 'where to write the flannel subnet file' },
  'subnet-lease-ttl': { type: 'string', default: '24h', help: 'TTL of the subnet lease in etcd (e.g. 24h, 90m, 600s)' },
  'tun-name': { type: 'string', default: 'flannel0', help: 'name of the TUN device' },
  'ip-masq': { type: 'boolean', default: 'false', help: 'masquerade traffic from pods to destinations outside the cluster Network (nftables)' },
  'metrics-addr': { type: 'string', default: '127.0.0.1:9285', help: 'HTTP address for /metrics, /healthz and /status (empty disables)' },
  'log-level': { type: 'string', default: 'info', help: `log level: ${LOG_LEVELS.join(', ')}` },
  'log-format': { type: 'string', default: 'json', help: 'log format: json (one JSON object per line) or text (time, level, message and fields on one line)' },
  'help': { type: 'boolean', help: 'print this help and exit', noEnv: true },
  'version': { type: 'boolean', help: 'print the version and exit', noEnv: true },
} as const satisfies Record<string, FlagSpec>;

export type FlagName = keyof typeof FLAGS;

export function envName(flag: string): string {
  return `OVERLAYD_${flag.toUpperCase().replace(/-/g, '_')}`;
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

export interface Config {
  readonly engine: EngineKind;
  /** native engine offloads (the js engine has none) */
  readonly offloads: OffloadConfig;
  /** forwarding threads of the native engine (1 for js) */
  readonly queues: number;
  readonly staticConfig?: string;
  readonly etcd: EtcdConnection;
  readonly iface?: string;
  readonly publicIp?: string;
  readonly subnetFile: string;
  /** seconds */
  readonly subnetLeaseTtl: number;
  readonly tunName: string;
  readonly ipMasq: boolean;
  /** host:port, or undefined when disabled */
  readonly metricsAddr?: { host: string; port: number };
  readonly logLevel: LogLevel;
  readonly logFormat: LogFormat;
}

export type ParsedCommand =
  | { kind: 'help' }
  | { kind: 'version' }
  | { kind: 'daemon'; config: Config };

/** Parses "24h", "90m", "600s", "1d" or plain seconds into seconds. */
export function parseDuration(flag: string, value: string): number {
  const m = /^(\d+)(s|m|h|d)?$/.exec(value.trim());
  if (!m) throw new ConfigError(`--${flag}: "${value}" is not a duration (examples: 24h, 90m, 600s)`);
  const n = Number(m[1]) * ({ s: 1, m: 60, h: 3600, d: 86400 }[m[2] as 's' | 'm' | 'h' | 'd' | undefined ?? 's']);
  if (!Number.isSafeInteger(n) || n < 10) throw new ConfigError(`--${flag}: ${value} is too short (at least 10s)`);
  return n;
}

/** Parses "host:port" ("[::1]:9285" too). */
export function parseHostPort(flag: string, value: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:]+)):(\d{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port < 0 || port > 65535) throw new ConfigError(`--${flag}: "${value}" is not host:port`);
  return { host: (m[1] ?? m[2]) as string, port };
}

const IFNAME = /^[A-Za-z0-9_.:-]{1,15}$/;

/** Turns argv (after the subcommand) and the environment into a validated command. */
export function parseDaemonArgs(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ParsedCommand {
  const options: Record<string, { type: FlagType }> = {};
  for (const [name, spec] of Object.entries(FLAGS)) options[name] = { type: spec.type };
  let values: Record<string, string | boolean | undefined>;
  try {
    ({ values } = parseArgs({ args: [...argv], options, allowPositionals: false, strict: true }) as { values: Record<string, string | boolean | undefined> });
  } catch (err) {
    throw new ConfigError(`${(err as Error).message.replace(/\. To specify.*$/s, '')} (see overlayd --help)`);
  }
  if (values['help'] === true) return { kind: 'help' };
  if (values['version'] === true) return { kind: 'version' };

  const get = (flag: FlagName): string | undefined => {
    const v = values[flag];
    if (typeof v === 'string') return v;
    const spec: FlagSpec = FLAGS[flag];
    if (!spec.noEnv) {
      const e = env[envName(flag)];
      if (e !== undefined) return e;
    }
    return spec.default;
  };
  const getBool = (flag: FlagName): boolean => {
    const v = values[flag];
    if (typeof v === 'boolean') return v;
    const e = env[envName(flag)];
    if (e === undefined || e === '') return false;
    if (/^(1|true|yes|on)$/i.test(e)) return true;
    if (/^(0|false|no|off)$/i.test(e)) return false;
    throw new ConfigError(`${envName(flag)}: "${e}" is not a boolean (true/false)`);
  };
  /** a string flag holding a boolean (true/false, 1/0, yes/no, on/off), so that a default of true can be turned off */
  const getOnOff = (flag: FlagName): boolean => {
    const v = (get(flag) ?? '').trim();
    if (/^(1|true|yes|on)$/i.test(v)) return true;
    if (/^(0|false|no|off)$/i.test(v)) return false;
    throw new ConfigError(`--${flag} (${envName(flag)}): "${v}" is not a boolean (true/false)`);
  };
  const getOpt = (flag: FlagName): string | undefined => {
    const v = get(flag);
    return v === undefined || v === '' ? undefined : v;
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
  const logLevel = get('log-level') as string;
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) throw new ConfigError(`--log-level: "${logLevel}" is not one of ${LOG_LEVELS.join(', ')}`);

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
  const iface = getOpt('iface');
  if (iface !== undefined && !isIp(iface) && !IFNAME.test(iface)) throw new ConfigError(`--iface: "${iface}" is neither an interface name nor an IPv4 address`);
  const tunName = get('tun-name') as string;
  if (!IFNAME.test(tunName)) throw new ConfigError(`--tun-name: "${tunName}" is not a valid interface name (1-15 characters of A-Z a-z 0-9 _ . : -)`);
  const subnetFile = get('subnet-file') as string;
  if (subnetFile === '' || subnetFile.endsWith('/')) throw new ConfigError(`--subnet-file: "${subnetFile}" is not a file path`);
  const metrics = getOpt('metrics-addr');

  const config: Config = {
    engine: engine as EngineKind,
    queues,
    offloads: { tun: getOnOff('tun-offload'), udpGso: getOnOff('udp-gso'), udpGro: getOnOff('udp-gro') },
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
    publicIp,
    subnetFile,
    subnetLeaseTtl: parseDuration('subnet-lease-ttl', get('subnet-lease-ttl') as string),
    tunName,
    ipMasq: getBool('ip-masq'),
    metricsAddr: metrics === undefined ? undefined : parseHostPort('metrics-addr', metrics),
    logLevel: logLevel as LogLevel,
    logFormat: oneOf('log-format', LOG_FORMATS),
  };
  return { kind: 'daemon', config };
}

/** The --help text: every flag with its environment variable and default. */
export function helpText(): string {
  const lines = [
    'usage: overlayd [flags]            run the daemon',
    '       overlayd status [--json]    ask the running daemon of this network namespace',
    '',
    'flags (each also read from the environment variable shown):',
  ];
  for (const [name, spec] of Object.entries(FLAGS) as [string, FlagSpec][]) {
    const def = spec.default !== undefined ? ` (default ${JSON.stringify(spec.default)})` : '';
    const env = spec.noEnv ? '' : `  [${envName(name)}]`;
    lines.push(`  --${name}${spec.type === 'string' ? ' VALUE' : ''}`, `      ${spec.help}${def}${env}`);
  }
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
