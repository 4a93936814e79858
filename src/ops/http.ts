/**
 * The daemon's HTTP endpoint (--metrics-addr): GET /metrics (Prometheus text format),
 * GET /status (JSON for `overlayd status`),
 * GET /healthz (200 while forwarding and the lease is valid, else 503 with a JSON reason).
 * Bound to loopback by default; one per network namespace.
 */
import * as http from 'node:http';
import type { Registry } from 'prom-client';

export interface StatusProvider {
  status(): unknown;
  /** undefined when healthy, else the reason */
  unhealthy(): string | undefined;
}

export async function startHttp(addr: { host: string; port: number }, provider: StatusProvider, metrics: Registry): Promise<http.Server> {
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
      return reason === undefined ? send(200, { ok: true }) : send(503, { ok: false, reason });
    }
    return send(404, { error: 'not found', paths: ['/metrics', '/status', '/healthz'] });
  });
  server.keepAliveTimeout = 1000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(new Error(`cannot listen on --metrics-addr ${addr.host}:${addr.port}: ${err.code ?? err.message}`, { cause: err })));
    server.listen(addr.port, addr.host, () => resolve());
  });
  return server;
}

export function closeHttp(server: http.Server): Promise<void> {
  return new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}
