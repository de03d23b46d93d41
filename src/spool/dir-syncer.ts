// Group commit for directory fsyncs. Every accepted message must have its directory entry
// on disk before the 250, but many messages arriving together can share one fsync: a caller
// waits for a sync that *started after* its rename, so durability is the same while the
// number of fsyncs under load drops to about one per disk round-trip.
import { fsyncDir } from './fsync.js';

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

  constructor(private readonly dir: string) {}

  sync(): Promise<void> {
    if (!this.running) return this.start();
    this.next ??= waiters();
    return this.next.promise;
  }

  private start(): Promise<void> {
    const run = fsyncDir(this.dir);
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
