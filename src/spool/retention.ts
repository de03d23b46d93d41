// Retention: the dead letters (failed/) and the captured messages (outbox/, capture mode) are
// kept for `retention.failed` and `retention.outbox` and then removed, so neither folder grows
// without limit. The relay sweeps at start and every hour; a sweep reads each folder as a stream
// (opendir: no list of a million names in memory) and goes by each envelope's mtime, which is
// when the message got there (a dead letter's failedAt, a capture's write).
import { opendir, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { Config } from '../config/load.js';
import { formatDuration } from '../config/units.js';
import type { Logger } from '../log.js';
import { QUEUE_ID_PATTERN } from './entry.js';

export const SWEEP_INTERVAL_MS = 3_600_000;

async function mtimeOf(file: string): Promise<number | undefined> {
  try {
    return (await stat(file)).mtimeMs;
  } catch {
    return undefined;
  }
}

const idOf = (name: string, ext: string) =>
  name.endsWith(ext) && QUEUE_ID_PATTERN.test(name.slice(0, -ext.length))
    ? name.slice(0, -ext.length)
    : undefined;

/**
 * Removes the messages (<id>.json and <id>.eml) in `dir` whose envelope is older than `maxAgeMs`,
 * and bodies older than that with no envelope. 0 keeps everything. Returns the messages removed.
 */
export async function sweepFolder(dir: string, maxAgeMs: number, now = Date.now()): Promise<number> {
  if (!maxAgeMs) return 0;
  const cutoff = now - maxAgeMs;
  let entries;
  try {
    entries = await opendir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 0;
    throw err;
  }
  let removed = 0;
  for await (const entry of entries) {
    const json = idOf(entry.name, '.json');
    if (json) {
      const mtime = await mtimeOf(path.join(dir, entry.name));
      if (mtime === undefined || mtime >= cutoff) continue;
      // The envelope first, as the spool removes a message: a crash leaves at most a body.
      await unlink(path.join(dir, entry.name)).catch(() => undefined);
      await unlink(path.join(dir, `${json}.eml`)).catch(() => undefined);
      removed++;
      continue;
    }
    const eml = idOf(entry.name, '.eml');
    if (!eml || (await mtimeOf(path.join(dir, `${eml}.json`))) !== undefined) continue;
    // A body without its envelope, long enough to be no write in progress.
    const mtime = await mtimeOf(path.join(dir, entry.name));
    if (mtime !== undefined && mtime < cutoff)
      await unlink(path.join(dir, entry.name)).catch(() => undefined);
  }
  return removed;
}

export interface SweepResult {
  failed: number;
  outbox: number;
}

/** Runs the sweep at start and every hour, with the retention the config says at that moment. */
export class RetentionSweeper {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<SweepResult | undefined> | undefined;

  constructor(
    private readonly deps: {
      failedDir: string;
      outboxDir: string;
      config: () => Config;
      log: Logger;
      intervalMs?: number;
      /** Told what each sweep removed (for smarthost_retention_removed_total). */
      removed?: (result: SweepResult) => void;
    },
  ) {}

  start(): void {
    void this.sweep();
    this.timer = setInterval(() => void this.sweep(), this.deps.intervalMs ?? SWEEP_INTERVAL_MS);
    this.timer.unref();
  }

  /** One sweep (none starts while another runs); logs one line. Never rejects. */
  sweep(now = Date.now()): Promise<SweepResult | undefined> {
    this.running ??= this.run(now).finally(() => (this.running = undefined));
    return this.running;
  }

  private async run(now: number): Promise<SweepResult | undefined> {
    const { failedDir, outboxDir, log } = this.deps;
    const { retention } = this.deps.config();
    try {
      const result = {
        failed: await sweepFolder(failedDir, retention.failed, now),
        outbox: await sweepFolder(outboxDir, retention.outbox, now),
      };
      const keep = (ms: number) => (ms ? formatDuration(ms) : 'off');
      const fields = {
        event: 'retention_swept' as const,
        ...result,
        failedRetention: keep(retention.failed),
        outboxRetention: keep(retention.outbox),
      };
      const message = `retention: removed ${result.failed} dead letter(s) and ${result.outbox} captured message(s)`;
      // Every sweep is logged; an hourly "nothing removed" only at debug.
      if (result.failed || result.outbox) log.info(message, fields);
      else log.debug(message, fields);
      this.deps.removed?.(result);
      return result;
    } catch (err) {
      log.warn(`retention sweep failed: ${(err as Error).message}`, { event: 'retention_failed' });
      return undefined;
    }
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
    await this.running;
  }
}
