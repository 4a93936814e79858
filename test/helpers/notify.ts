/**
 * A stand-in for systemd's notify socket ($NOTIFY_SOCKET): a python3 unix datagram receiver
 * that records every message. Started and stopped by pid.
 */
import { spawn, type ChildProcess } from 'node:child_process';

const RECEIVER = `
import json, socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("bound", flush=True)
while True:
    data = s.recv(4096)
    print(int(time.time() * 1000), json.dumps(data.decode()), flush=True)
`;

export interface NotifyMessage {
  /** ms since epoch, when received */
  ms: number;
  text: string;
}

export class NotifyReceiver {
  private child: ChildProcess | undefined;
  private out = '';

  constructor(readonly socketPath: string) {}

  /** Starts the receiver and waits (bounded, 10 s) until it is bound. */
  async start(): Promise<void> {
    const child = spawn('python3', ['-c', RECEIVER, this.socketPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    child.stdout?.on('data', (d: Buffer) => { this.out += d.toString(); });
    for (let i = 0; i < 200 && !this.out.includes('bound'); i++) {
      if (child.exitCode !== null) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    if (!this.out.includes('bound')) throw new Error(`notify receiver did not bind ${this.socketPath}`);
  }

  messages(): NotifyMessage[] {
    return this.out.split('\n').slice(1).filter((l) => l !== '').map((l) => {
      const sp = l.indexOf(' ');
      return { ms: Number(l.slice(0, sp)), text: JSON.parse(l.slice(sp + 1)) as string };
    });
  }

  /** Polls (every 100 ms, up to timeoutMs) until a message satisfies `pred`; returns it or undefined. */
  async waitFor(pred: (text: string) => boolean, timeoutMs: number): Promise<string | undefined> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const m = this.messages().find((x) => pred(x.text));
      if (m) return m.text;
      if (Date.now() > deadline) return undefined;
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  stop(): void {
    const c = this.child;
    this.child = undefined;
    if (c && c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  }
}
