// The dead letters, in failed/: a message that could not be delivered, kept with the reason,
// for the CLI (`queue list --state failed`, `queue requeue`) until retention removes it. Like a
// split queued message, <id>.eml is its body and <id>.json its state (now with the reason).
import { readdir, unlink } from 'node:fs/promises';
import path from 'node:path';
import type { QueueEntry } from './entry.js';
import { readJsonFile, replaceFileDurably } from './fsync.js';

export interface DeadLetter extends QueueEntry {
  failedAt: number;
  reason: string;
}

export class DeadLetters {
  constructor(
    readonly dir: string,
    /** A temp name on the same file system, for writes made atomic by a rename. */
    private readonly tmpPath: (id: string) => string,
  ) {}

  bodyPath(id: string): string {
    return path.join(this.dir, `${id}.eml`);
  }

  private metaPath(id: string): string {
    return path.join(this.dir, `${id}.json`);
  }

  /** Writes a dead letter's state durably (not the folder: the caller fsyncs it after the body). */
  async write(dead: DeadLetter): Promise<void> {
    await replaceFileDurably(this.tmpPath(dead.id), this.metaPath(dead.id), JSON.stringify(dead, null, 2));
  }

  async list(): Promise<DeadLetter[]> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const out: DeadLetter[] = [];
    for (const name of names.filter((n) => n.endsWith('.json')).sort()) {
      // A half-written dead letter cannot exist (written via rename); foreign files are skipped.
      const dead = await this.read(name.slice(0, -5));
      if (dead) out.push(dead);
    }
    return out;
  }

  /** One dead letter, or undefined when there is none by that id. */
  read(id: string): Promise<DeadLetter | undefined> {
    return readJsonFile<DeadLetter>(this.metaPath(id));
  }

  /** Deletes a dead letter for good. False when there is none by that id. */
  async remove(id: string): Promise<boolean> {
    try {
      await unlink(this.metaPath(id));
    } catch {
      return false;
    }
    await unlink(this.bodyPath(id)).catch(() => undefined);
    return true;
  }
}
