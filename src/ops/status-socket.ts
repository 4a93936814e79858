/**
 * The status socket: an abstract unix socket, one per network namespace (abstract names are
 * scoped to the namespace and vanish with the process, so nothing is left on disk and no
 * directory must be writable). The daemon serves its HTTP endpoints on it for its whole
 * life; binding it is also the single-instance lock. `overlayd status` connects to it, so it
 * finds the daemon of its namespace without flags, environment or --metrics-addr.
 */
import * as http from 'node:http';

export const STATUS_SOCKET = '\0overlayd.instance';

export interface HttpAnswer {
  status: number;
  body: unknown;
}

/** GET `path` from the daemon, over the status socket or TCP host:port; JSON body. */
export function getJson(target: { socketPath: string } | { host: string; port: number }, path: string, timeoutMs: number): Promise<HttpAnswer> {
  return new Promise((resolve, reject) => {
    const req = http.get({ ...target, path, timeout: timeoutMs }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(Buffer.concat(chunks).toString('utf8')) });
        } catch (err) {
          reject(err);
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
  });
}
