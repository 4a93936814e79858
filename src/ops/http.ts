/**
 * The daemon's HTTP endpoints, the same on each listener: GET /metrics (Prometheus text
 * format), GET /status (the StatusDoc of status-types.ts), GET /healthz (200 while forwarding
 * with a valid lease, else 503 with the reason and the phase). Listeners: the status socket
 * (always; see status-socket.ts) and --metrics-addr (loopback by default; empty disables).
 * Both are up from the start of the daemon, so health is visible while it waits.
 */
import * as http from 'node:http';
import type { Registry } from 'prom-client';
import type { Phase, StatusDoc } from './status-types';

export interface StatusProvider {
  status(): StatusDoc;
  /** undefined when healthy, else the reason */
  unhealthy(): string | undefined;
  phase(): Phase;
}

/** Where a listener listens: TCP host:port, or a unix socket path ("\0name": abstract). */
export type ListenTarget = { host: string; port: number } | { path: string };

export function createHttpServer(provider: StatusProvider, metrics: Registry): http.Server {
  const server = http.createServer((req, res) => {
    const send = (code: number, body: unknown) => {
      const text = JSON.stringify(body, null, 1) + '\n';
      res.writeHead(code, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
      res.end(text);
    };
    if (req.method !== 'GET') return send(405, { error: 'method not allowed' });
    const url = (req.url ?? '/').split('?')[0];
    if (url === '/status') return send(200, provider.status());
    if (url === '/metrics') {
      metrics.metrics().then((text) => {
        res.writeHead(200, { 'content-type': metrics.contentType });
        res.end(text);
      }, (err: unknown) => send(500, { error: String(err) }));
      return;
    }
    if (url === '/healthz') {
      const reason = provider.unhealthy();
      return reason === undefined ? send(200, { ok: true, phase: provider.phase() }) : send(503, { ok: false, reason, phase: provider.phase() });
    }
    return send(404, { error: 'not found', paths: ['/metrics', '/status', '/healthz'] });
  });
  server.keepAliveTimeout = 1000;
  return server;
}

/** Listens; rejects with the listen error (err.code kept, e.g. EADDRINUSE). */
export function listen(server: http.Server, target: ListenTarget): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const onError = (err: Error) => reject(err);
    server.once('error', onError);
    const done = () => {
      server.off('error', onError);
      resolve();
    };
    if ('path' in target) server.listen(target.path, done);
    else server.listen(target.port, target.host, done);
  });
}

export function closeHttp(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}
