/**
 * EtcdOptions (flanneld's --etcd-* flags) -> an `etcd3` client with TLS and password auth,
 * bounded call deadlines, gRPC keepalive, and errors explained in the user's terms.
 */
import { promises as fs } from 'node:fs';
import * as tls from 'node:tls';
import { credentials as grpcCredentials, Metadata } from '@grpc/grpc-js';
import { Etcd3, isRecoverableError, type IOptions } from 'etcd3';
import { ConfigError, EtcdError, errorMessage } from '../errors';

export interface EtcdOptions {
  endpoints: string[];
  prefix: string;
  cafile?: string;
  certfile?: string;
  keyfile?: string;
  username?: string;
  password?: string;
}

export const DEFAULT_ETCD_ENDPOINTS: readonly string[] = ['http://127.0.0.1:2379'];

export interface EtcdClientTuning {
  /** deadline of every unary call (get, put, txn, lease grant...), ms; default 5000 */
  callTimeoutMs?: number;
}

export const DEFAULT_CALL_TIMEOUT_MS = 5000;

/**
 * Per-call credentials that add the gRPC metadata `hasleader: true` (what etcd's Go client
 * sends for clientv3.WithRequireLeader): a member without a leader (cut off from its
 * cluster) refuses such a stream at once, and cancels an open one with "etcdserver: no
 * leader" a few election timeouts after losing the leader, instead of leaving it silent.
 * Used on every stream (watch, lease keepalive), as etcd's Go client does for both.
 * (@grpc/grpc-js is etcd3's own gRPC library, the same instance.)
 */
const REQUIRE_LEADER = grpcCredentials.createFromMetadataGenerator((_params, callback) => {
  const md = new Metadata();
  md.set('hasleader', 'true');
  callback(null, md);
});

/** etcd's answer of a member that has no leader (partitioned, or the cluster lost quorum). */
export function isNoLeaderError(err: unknown): boolean {
  return err instanceof Error && /no leader/i.test(err.message);
}

export interface Endpoints {
  /** "http(s)://host:port", what etcd3 wants */
  readonly hosts: string[];
  readonly secure: boolean;
}

/**
 * Validates and normalizes endpoints like flanneld's --etcd-endpoints: each
 * `http://host:port` or `https://host:port` (a missing scheme means https when TLS files
 * are given, else http; a missing port means 2379). Mixed schemes are refused.
 */
export function normalizeEndpoints(endpoints: readonly string[], tlsFiles: boolean): Endpoints {
  const list = endpoints.map((e) => e.trim()).filter((e) => e !== '');
  if (list.length === 0) throw new ConfigError('--etcd-endpoints: no endpoint given');
  const hosts: string[] = [];
  const schemes = new Set<string>();
  for (const e of list) {
    const m = /^(?:([a-zA-Z][a-zA-Z0-9+.-]*):\/\/)?([^/?#]+)\/?$/.exec(e);
    if (!m) throw new ConfigError(`--etcd-endpoints: ${JSON.stringify(e)} is not an http(s)://host:port URL`);
    const scheme = (m[1] ?? (tlsFiles ? 'https' : 'http')).toLowerCase();
    if (scheme !== 'http' && scheme !== 'https') {
      throw new ConfigError(`--etcd-endpoints: ${JSON.stringify(e)}: scheme must be http or https`);
    }
    let hostPort = m[2] ?? '';
    const hasPort = hostPort.startsWith('[') ? /\]:\d+$/.test(hostPort) : /:\d+$/.test(hostPort);
    if (!hasPort) hostPort = `${hostPort}:2379`;
    const port = Number(/:(\d+)$/.exec(hostPort)?.[1]);
    if (!(port >= 1 && port <= 65535)) throw new ConfigError(`--etcd-endpoints: ${JSON.stringify(e)}: bad port`);
    schemes.add(scheme);
    hosts.push(`${scheme}://${hostPort}`);
  }
  if (schemes.size > 1) throw new ConfigError('--etcd-endpoints: all endpoints must use the same scheme (http or https)');
  return { hosts, secure: schemes.has('https') };
}

async function readPem(flag: string, file: string): Promise<Buffer> {
  try {
    return await fs.readFile(file);
  } catch (err) {
    throw new ConfigError(`${flag} ${file}: cannot read it: ${errorMessage(err)}`, { cause: err });
  }
}

/** The etcd3 IOptions for EtcdOptions (reads the TLS files). */
export async function etcd3Options(opts: EtcdOptions, tuning: EtcdClientTuning = {}): Promise<IOptions> {
  const tlsFiles = Boolean(opts.cafile || opts.certfile || opts.keyfile);
  const { hosts, secure } = normalizeEndpoints(opts.endpoints, tlsFiles);
  if (Boolean(opts.certfile) !== Boolean(opts.keyfile)) {
    throw new ConfigError('--etcd-certfile and --etcd-keyfile must be given together');
  }
  if (tlsFiles && !secure) {
    throw new ConfigError('--etcd-cafile/--etcd-certfile/--etcd-keyfile are given but --etcd-endpoints use http://; use https://');
  }
  if (Boolean(opts.username) !== Boolean(opts.password)) {
    throw new ConfigError('--etcd-username and --etcd-password must be given together');
  }
  const callTimeoutMs = tuning.callTimeoutMs ?? DEFAULT_CALL_TIMEOUT_MS;
  const options: IOptions = {
    hosts,
    dialTimeout: callTimeoutMs,
    defaultCallOptions: (ctx) => (ctx.isStream ? { credentials: REQUIRE_LEADER } : { deadline: Date.now() + callTimeoutMs }),
    grpcOptions: {
      // find dead connections (no RST, e.g. a partitioned network) on the watch stream;
      // etcd allows pings every 5 s at most (--grpc-keepalive-min-time)
      'grpc.keepalive_time_ms': 10_000,
      'grpc.keepalive_timeout_ms': 5_000,
      'grpc.keepalive_permit_without_calls': 0,
      'grpc.initial_reconnect_backoff_ms': 250,
      'grpc.max_reconnect_backoff_ms': 5_000,
    },
  };
  if (secure) {
    options.credentials = {
      // no --etcd-cafile: the system's trusted roots, as Go's crypto/tls does for flanneld
      rootCertificate: opts.cafile ? await readPem('--etcd-cafile', opts.cafile) : Buffer.from(tls.rootCertificates.join('\n')),
      ...(opts.certfile && opts.keyfile
        ? { certChain: await readPem('--etcd-certfile', opts.certfile), privateKey: await readPem('--etcd-keyfile', opts.keyfile) }
        : {}),
    };
  }
  if (opts.username && opts.password) options.auth = { username: opts.username, password: opts.password };
  return options;
}

/** A client for EtcdOptions. Throws ConfigError for unusable options; does not connect yet. */
export async function createEtcdClient(opts: EtcdOptions, tuning: EtcdClientTuning = {}): Promise<Etcd3> {
  return new Etcd3(await etcd3Options(opts, tuning));
}

/** An etcd/gRPC error's message without grpc-js's noise (timestamps, empty resolution notes). */
export function etcdErrorText(err: unknown): string {
  return errorMessage(err)
    .replace(/\s*\(\d{4}-\d\d-\d\dT[\d:.]+Z\)/g, '')
    .replace(/\.?\s*Resolution note:\s*$/s, '')
    .replace(/\s+/g, ' ')
    .trim();
}

const TLS_HINT = /certificate|handshake|ssl|tls|alert|wrong version number|self[- ]signed|unable to (get|verify)|CERT_|EPROTO/i;
const AUTH_HINT = /authentication failed|user name is empty|invalid auth token|permission denied|auth: revision|user name not found|Unauthenticated/i;

/** True for errors that may go away by themselves (etcd down, no leader, a timeout). */
export function isTransientEtcdError(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  if (TLS_HINT.test(err.message) || AUTH_HINT.test(err.message)) return false;
  if (isRecoverableError(err)) return true;
  return /unavailable|deadline|timed out|timeout|no leader|leader changed|ECONNREFUSED|ECONNRESET|circuit breaker|connection|too many requests/i.test(
    err.message,
  );
}

/**
 * Turns an error from the etcd client into an EtcdError whose message says what went wrong
 * in terms of the --etcd-* flags: missing client certificate, untrusted server certificate,
 * bad credentials, unreachable endpoints.
 */
export function explainEtcdError(err: unknown, opts: EtcdOptions, action: string): EtcdError {
  if (err instanceof EtcdError) return err;
  const msg = etcdErrorText(err);
  const where = `etcd at ${opts.endpoints.join(',')}`;
  if (TLS_HINT.test(msg)) {
    if (/certificate required|bad certificate|alert number 116|handshake failure/i.test(msg) && !opts.certfile) {
      return new EtcdError(
        `${action}: ${where} refused the TLS connection: it requires a client certificate, and none was given ` +
          `(pass --etcd-certfile and --etcd-keyfile, and --etcd-cafile for its CA) [${msg}]`,
        { cause: err },
      );
    }
    if (/self[- ]signed|unable to (get|verify)|unknown ca|CERT_/i.test(msg)) {
      return new EtcdError(
        `${action}: the TLS certificate of ${where} is not trusted${opts.cafile ? ` by --etcd-cafile ${opts.cafile}` : ' (pass --etcd-cafile)'} [${msg}]`,
        { cause: err },
      );
    }
    return new EtcdError(
      `${action}: TLS with ${where} failed${opts.certfile ? ` (client certificate ${opts.certfile})` : ' (no client certificate given: --etcd-certfile/--etcd-keyfile)'} [${msg}]`,
      { cause: err },
    );
  }
  if (AUTH_HINT.test(msg)) {
    return new EtcdError(
      `${action}: ${where} refused the credentials${opts.username ? ` of user ${opts.username}` : ' (it requires --etcd-username/--etcd-password)'} [${msg}]`,
      { cause: err },
    );
  }
  return new EtcdError(`${action}: ${where}: ${msg}`, { cause: err });
}
