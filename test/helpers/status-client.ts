/**
 * Reads a daemon's HTTP endpoint (/status, /metrics) over ONE reused TCP connection, for
 * fixtures that poll it thousands of times (flow control). A new connection per poll leaves
 * a TIME_WAIT socket each time and runs a namespace out of ephemeral ports
 * (connect EADDRNOTAVAIL).
 *
 * Node's http.Agent refuses to reuse a socket when the server's `Keep-Alive: timeout=N`
 * hint is 1 s or less (it subtracts a 1 s safety margin), and the daemon announces
 * timeout=1; this agent keeps the socket anyway. The server may close an idle socket
 * (after its keepAliveTimeout) just as a request goes out on it: a request on a reused
 * socket that fails with ECONNRESET/EPIPE is retried once on a fresh connection.
 */
import * as http from 'node:http';
import type { Socket } from 'node:net';

class ReuseAgent extends http.Agent {
  override keepSocketAlive(socket: Socket): boolean {
    super.keepSocketAlive(socket);
    return true;
  }
}

export class StatusClient {
  private readonly agent = new ReuseAgent({ keepAlive: true, maxSockets: 1, maxFreeSockets: 1 });
  /** TCP connections opened so far (diagnostics: stays at 1 while the server keeps it) */
  connections = 0;

  /** base: e.g. "http://10.99.0.2:9285"; timeoutMs bounds each request */
  constructor(private readonly base: string, private readonly timeoutMs = 5000) {}

  /** GET path; resolves the body text of a 200 response, rejects otherwise. */
  async get(path: string): Promise<string> {
    try {
      return await this.once(path);
    } catch (err) {
      const e = err as NodeJS.ErrnoException & { reused?: boolean };
      if (e.reused === true && (e.code === 'ECONNRESET' || e.code === 'EPIPE')) return this.once(path);
      throw err;
    }
  }

  /** GET path and parse JSON. */
  async json<T>(path: string): Promise<T> {
    return JSON.parse(await this.get(path)) as T;
  }

  close(): void {
    this.agent.destroy();
  }

  private once(path: string): Promise<string> {
    return new Promise((resolve, reject) => {
      const req = http.get(`${this.base}${path}`, { agent: this.agent, timeout: this.timeoutMs }, (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const body = Buffer.concat(chunks).toString('utf8');
          if (res.statusCode === 200) resolve(body);
          else reject(new Error(`GET ${path}: HTTP ${res.statusCode}: ${body.slice(0, 200)}`));
        });
        res.on('error', reject);
      });
      req.on('socket', () => { if (!req.reusedSocket) this.connections++; });
      req.on('timeout', () => req.destroy(new Error(`GET ${path}: no answer within ${this.timeoutMs} ms`)));
      req.on('error', (err: NodeJS.ErrnoException & { reused?: boolean }) => {
        err.reused = req.reusedSocket;
        reject(err);
      });
    });
  }
}
