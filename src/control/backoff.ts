/** Bounded exponential backoff with jitter, and a sleep that a stop can cut short. */

export interface BackoffOptions {
  /** first delay, ms */
  readonly initialMs: number;
  /** the delay never exceeds this, ms */
  readonly maxMs: number;
  /** growth factor per failure (default 2) */
  readonly factor?: number;
  /** +- this fraction of random jitter (default 0.2) */
  readonly jitter?: number;
}

export class Backoff {
  private attempt = 0;
  constructor(
    private readonly o: BackoffOptions,
    private readonly random: () => number = Math.random,
  ) {}

  /** The next delay (ms), growing until maxMs. */
  next(): number {
    const base = Math.min(this.o.maxMs, this.o.initialMs * (this.o.factor ?? 2) ** this.attempt);
    this.attempt = Math.min(this.attempt + 1, 64);
    const j = this.o.jitter ?? 0.2;
    return Math.max(0, Math.min(this.o.maxMs, Math.round(base * (1 - j + 2 * j * this.random()))));
  }

  /** Failures since the last reset. */
  get failures(): number {
    return this.attempt;
  }

  reset(): void {
    this.attempt = 0;
  }
}

/** A stop flag with sleeps that end early once stopped. */
export class Stopper {
  private stoppedFlag = false;
  private readonly wakers = new Set<() => void>();

  get stopped(): boolean {
    return this.stoppedFlag;
  }

  stop(): void {
    this.stoppedFlag = true;
    for (const w of this.wakers) w();
    this.wakers.clear();
  }

  /** Resolves after ms, or at once when stopped (true = slept fully, false = stopped). */
  sleep(ms: number): Promise<boolean> {
    if (this.stoppedFlag) return Promise.resolve(false);
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.wakers.delete(wake);
        resolve(true);
      }, ms);
      const wake = (): void => {
        clearTimeout(timer);
        resolve(false);
      };
      this.wakers.add(wake);
    });
  }
}

/** Rejects with `onTimeout()` if `p` has not settled within ms. */
export function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const timer = setTimeout(() => reject(onTimeout()), ms);
    p.then(
      (v) => {
        clearTimeout(timer);
        resolve(v);
      },
      (e: unknown) => {
        clearTimeout(timer);
        reject(e instanceof Error ? e : new Error(String(e)));
      },
    );
  });
}
