/**
 * Cleanup that always runs: tasks registered while resources are created, run in reverse
 * order by `runAll()` (the benchmark's finally) or by the SIGINT/SIGTERM handler, which then
 * exits. Each task runs at most once; a failing task does not stop the others.
 */
export class Janitor {
  private tasks: { name: string; fn: () => void | Promise<void> }[] = [];
  private running: Promise<void> | undefined;

  /** Registers `fn`; returns a function that runs it now (once) and unregisters it. */
  add(name: string, fn: () => void | Promise<void>): () => Promise<void> {
    const task = { name, fn };
    this.tasks.push(task);
    return async () => {
      const i = this.tasks.indexOf(task);
      if (i < 0) return;
      this.tasks.splice(i, 1);
      await fn();
    };
  }

  /** Runs every registered task, newest first. Idempotent; concurrent callers share one run. */
  runAll(): Promise<void> {
    this.running ??= (async () => {
      while (this.tasks.length > 0) {
        const task = this.tasks.pop()!;
        try {
          await task.fn();
        } catch (err) {
          process.stderr.write(`bench cleanup: ${task.name}: ${String(err)}\n`);
        }
      }
      this.running = undefined;
    })();
    return this.running;
  }

  /** Installs SIGINT/SIGTERM handlers that clean up and exit (130 / 143). */
  installSignalHandlers(): void {
    for (const [sig, code] of [['SIGINT', 130], ['SIGTERM', 143]] as const) {
      process.once(sig, () => {
        process.stderr.write(`\nbench: ${sig}: cleaning up\n`);
        void this.runAll().finally(() => process.exit(code));
      });
    }
  }
}
