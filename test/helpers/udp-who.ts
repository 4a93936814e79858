/**
 * A one-datagram receiver in a network namespace (fixture test/e2e/fixtures/udp-who): tells
 * which source address a datagram arrived with (masquerade and bind-address tests).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as path from 'node:path';

const UDP_WHO = path.resolve(__dirname, '..', 'e2e', 'fixtures', 'udp-who.js');

/**
 * Starts the receiver on ip:port in ns; resolves once it listens (rejects after 10 s, the
 * child killed). `sender` resolves with the sender's address, '' when none came within 10 s.
 */
export async function udpWho(ns: string, ip: string, port: number): Promise<{ child: ChildProcess; sender: Promise<string> }> {
  const child = spawn('ip', ['netns', 'exec', ns, process.execPath, UDP_WHO, ip, String(port), '10000'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (d: Buffer) => { out += d.toString(); });
  const sender = new Promise<string>((resolve) => child.on('exit', () => resolve(out.trim())));
  try {
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`udp-who on ${ip}:${port} in ${ns} did not listen within 10 s`)), 10_000);
      child.stderr?.on('data', (d: Buffer) => { if (d.toString().includes('listening')) { clearTimeout(timer); resolve(); } });
    });
  } catch (err) {
    child.kill('SIGKILL');
    await sender;
    throw err;
  }
  return { child, sender };
}
