// Messages on hold (`smarthost queue hold`, Postfix's postsuper -h): the same two files as a
// queued message, moved from queue/ to hold/. The delivery queue only ever looks in queue/, so a
// held message is never attempted, and a restart does not resume it; it stays until released.
//
// A move renames the envelope (.json) first, then the body (.eml), then fsyncs both folders
// once. The envelope says where the message is; its body follows it. A crash can leave the two
// in different folders (in any combination, since either rename may reach the disk first); at
// start, init() (run before the spool's sweep of orphan bodies) puts each body back beside its
// envelope, so nothing is ever lost and nothing is swept as an orphan.
import { readdir, rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { QUEUE_ID_PATTERN, type QueueEntry } from './entry.js';
import { fsyncDir, readJsonFile, unlinkFile } from './fsync.js';
import { makePrivateDir } from './modes.js';

export class HoldFolder {
  constructor(
    readonly queueDir: string,
    readonly holdDir: string,
  ) {}

  /** Makes hold/ and reunites the bodies a crash left apart from their envelopes. */
  async init(): Promise<{ reunited: number }> {
    await makePrivateDir(this.holdDir);
    const queued = new Set(await readdir(this.queueDir));
    const held = new Set(await readdir(this.holdDir));
    let reunited = 0;
    // An envelope in one folder, its body in the other: the body moves to the envelope.
    for (const [envelopes, bodies, to, from] of [
      [held, queued, this.holdDir, this.queueDir],
      [queued, held, this.queueDir, this.holdDir],
    ] as const) {
      for (const name of envelopes) {
        if (!name.endsWith('.json')) continue;
        const body = `${name.slice(0, -5)}.eml`;
        if (envelopes.has(body) || !bodies.has(body)) continue;
        await rename(path.join(from, body), path.join(to, body));
        reunited++;
      }
    }
    if (reunited) await this.syncBoth();
    return { reunited };
  }

  bodyPath(id: string): string {
    return path.join(this.holdDir, `${id}.eml`);
  }

  private metaPath(id: string): string {
    return path.join(this.holdDir, `${id}.json`);
  }

  /** queue/ → hold/. False when no such message is queued. */
  hold(id: string): Promise<boolean> {
    return this.move(id, this.queueDir, this.holdDir);
  }

  /** hold/ → queue/. False when no such message is held. */
  release(id: string): Promise<boolean> {
    return this.move(id, this.holdDir, this.queueDir);
  }

  private async move(id: string, from: string, to: string): Promise<boolean> {
    // The CLI working on a stopped relay's spool (never init'ed by this version) may find no hold/.
    await makePrivateDir(to);
    try {
      await rename(path.join(from, `${id}.json`), path.join(to, `${id}.json`));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
    await rename(path.join(from, `${id}.eml`), path.join(to, `${id}.eml`)).catch(
      (err: NodeJS.ErrnoException) => {
        // A message without a body stays one (the queue deals with it as before).
        if (err.code !== 'ENOENT') throw err;
      },
    );
    await this.syncBoth();
    return true;
  }

  private async syncBoth(): Promise<void> {
    await Promise.all([fsyncDir(this.queueDir), fsyncDir(this.holdDir)]);
  }

  /** Ids of the held messages, oldest first. */
  async ids(): Promise<string[]> {
    const names = await readdir(this.holdDir).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return [] as string[];
      throw err;
    });
    return names
      .filter((n) => n.endsWith('.json'))
      .map((n) => n.slice(0, -5))
      .filter((id) => QUEUE_ID_PATTERN.test(id))
      .sort();
  }

  /** A held message's state, or undefined when none is held by that id. */
  read(id: string): Promise<QueueEntry | undefined> {
    return readJsonFile<QueueEntry>(this.metaPath(id));
  }

  /** Deletes a held message for good. False when none is held by that id. */
  async remove(id: string): Promise<boolean> {
    try {
      await unlinkFile(this.metaPath(id));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
    await unlink(this.bodyPath(id)).catch(() => undefined);
    return true;
  }
}
