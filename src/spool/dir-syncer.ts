// Group commit for directory fsyncs. Every accepted message must have its directory entry
// on disk before the 250, but many messages arriving together can share one fsync: a caller
// waits for a sync that *started after* its rename, so durability is the same while the
// number of fsyncs under load drops to about one per disk round-trip.
import { pooled, syncFd } from './fsync.js';

interface Waiters {
  promise: Promise<void>;
  resolve: () => void;
  reject: (err: unknown) => void;
}

function waiters(): Waiters {
  let resolve!: () => void;
  let reject!: (err: unknown) => void;
  const promise = new Promise<void>((res, rej) => {
    resolve = res;
    reject = rej;
  });
  return { promise, resolve, reject };
}

export class DirSyncer {
  private running: Promise<void> | undefined;
  private next: Waiters | undefined;
  /**
   * The folder, opened once and kept open: an open and a close around every fsync were two more
   * trips through the thread pool, each costing more than the fsync's own CPU time.
   */
  private fd: Promise<number> | undefined;

  constructor(private readonly dir: string) {}

  private async fsyncDir(): Promise<void> {
    this.fd ??= pooled.open(this.dir, 'r');
    const fd = this.fd;
    try {
      await syncFd(await fd);
    } catch (err) {
      // Opened again next time (the folder may have been missing, or made anew).
      if (this.fd === fd) this.fd = undefined;
      await fd.then((n) => pooled.close(n)).catch(() => undefined);
      throw err;
    }
  }

  sync(): Promise<void> {
    if (!this.running) return this.start();
    this.next ??= waiters();
    return this.next.promise;
  }

  private start(): Promise<void> {
    const run = this.fsyncDir();
    this.running = run.finally(() => {
      this.running = undefined;
      const next = this.next;
      this.next = undefined;
      if (next) this.start().then(next.resolve, next.reject);
    });
    // Callers see the result of their own sync; the `finally` chain above only schedules.
    this.running.catch(() => undefined);
    return run;
  }
}
