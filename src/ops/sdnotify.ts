/**
 * The systemd notify protocol (sd_notify(3)): datagrams to $NOTIFY_SOCKET. STATUS=<phase> on
 * each phase change and periodically while waiting (etcd, the network config); READY=1 only once
 * the lease is held, the TUN configured and the first full route sync applied; STOPPING=1 on
 * shutdown; WATCHDOG=1 every WATCHDOG_USEC/2 while the data plane is alive. Node has no unix
 * datagram sockets, so the send itself is the addon's (sdNotify).
 */
import { loadAddon } from '../dataplane/addon';

export type NotifySend = (message: string) => void;

export class SdNotifier {
  private watchdog: NodeJS.Timeout | undefined;

  constructor(private readonly send: NotifySend, private readonly watchdogUsec: number | undefined) {}

  /**
   * From the environment: undefined when $NOTIFY_SOCKET is unset (not run by systemd).
   * WATCHDOG_USEC counts only when WATCHDOG_PID is unset or names this process.
   */
  static fromEnv(env: NodeJS.ProcessEnv = process.env, send?: NotifySend): SdNotifier | undefined {
    const socket = env['NOTIFY_SOCKET'];
    if (socket === undefined || socket === '') return undefined;
    const pidOk = env['WATCHDOG_PID'] === undefined || env['WATCHDOG_PID'] === String(process.pid);
    const usec = Number(env['WATCHDOG_USEC']);
    const sender = send ?? ((message: string) => loadAddon().sdNotify(socket, message));
    return new SdNotifier(sender, pidOk && Number.isFinite(usec) && usec > 0 ? usec : undefined);
  }

  /** Sends; a failing notify socket must not take the daemon down, so errors are returned. */
  notify(message: string): Error | undefined {
    try {
      this.send(message);
      return undefined;
    } catch (err) {
      return err as Error;
    }
  }

  /** STATUS=: the one-line state `systemctl status` shows. */
  status(text: string): Error | undefined {
    return this.notify(`STATUS=${text.replace(/\n/g, ' ')}`);
  }

  ready(status: string): Error | undefined {
    return this.notify(`READY=1\nSTATUS=${status}\nMAINPID=${process.pid}`);
  }

  stopping(): Error | undefined {
    this.stopWatchdog();
    return this.notify('STOPPING=1');
  }

  /** Starts WATCHDOG=1 pings at half the interval, each only while `alive()` holds. */
  startWatchdog(alive: () => boolean): void {
    if (this.watchdogUsec === undefined || this.watchdog) return;
    const everyMs = Math.max(1, Math.floor(this.watchdogUsec / 2000));
    this.watchdog = setInterval(() => {
      if (alive()) this.notify('WATCHDOG=1');
    }, everyMs);
    this.watchdog.unref();
  }

  stopWatchdog(): void {
    if (this.watchdog) clearInterval(this.watchdog);
    this.watchdog = undefined;
  }
}
