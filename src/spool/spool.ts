// The durable queue on local disk. A message is two files in queue/: the body <id>.eml,
// written once, and the envelope/state <id>.json. Both are written in tmp/, fsynced, renamed
// into queue/ (body first: the .json is the commit point) and the directory fsynced, and only
// then may the listener answer 250. A body without its .json never got a 250 and is swept.
import { mkdir, readdir, readFile, rename, unlink, copyFile, stat } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { DirSyncer } from './dir-syncer.js';
import { fsyncDir, fsyncFile, replaceFileDurably, writeFileDurably, writeStreamDurably } from './fsync.js';
import { QUEUE_ID_PATTERN, type QueueEntry } from './entry.js';

export type NewEntry = Omit<QueueEntry, 'size'>;

export interface DeadLetter extends QueueEntry {
  failedAt: number;
  reason: string;
}

export class Spool {
  readonly queueDir: string;
  readonly tmpDir: string;
  readonly failedDir: string;
  readonly outboxDir: string;
  private readonly queueSync: DirSyncer;
  private tmpCounter = 0;

  constructor(readonly dir: string) {
    this.queueDir = path.join(dir, 'queue');
    this.tmpDir = path.join(dir, 'tmp');
    this.failedDir = path.join(dir, 'failed');
    this.outboxDir = path.join(dir, 'outbox');
    this.queueSync = new DirSyncer(this.queueDir);
  }

  /** Creates the folders, and sweeps what a crash left behind. Returns what was swept. */
  async init(): Promise<{ tmpFiles: number; orphanBodies: number; interruptedMoves: number }> {
    for (const dir of [this.dir, this.queueDir, this.tmpDir, this.failedDir]) {
      await mkdir(dir, { recursive: true, mode: 0o750 });
    }
    let tmpFiles = 0;
    for (const name of await readdir(this.tmpDir)) {
      await unlink(path.join(this.tmpDir, name)).catch(() => undefined);
      tmpFiles++;
    }
    const names = new Set(await readdir(this.queueDir));
    let orphanBodies = 0;
    let interruptedMoves = 0;
    for (const name of names) {
      if (name.endsWith('.eml') && !names.has(name.replace(/\.eml$/, '.json'))) {
        await unlink(path.join(this.queueDir, name)).catch(() => undefined);
        orphanBodies++;
      } else if (name.endsWith('.json') && !names.has(name.replace(/\.json$/, '.eml'))) {
        // An envelope without its body: a move to failed/ was cut short after the body went
        // (moveToFailed writes the dead letter first). Finish it, or the message would be
        // retried from a body that is not there until it expired, and bounced twice.
        const id = name.slice(0, -5);
        if (await exists(path.join(this.failedDir, `${id}.eml`))) {
          await unlink(path.join(this.queueDir, name)).catch(() => undefined);
          interruptedMoves++;
        }
      }
    }
    return { tmpFiles, orphanBodies, interruptedMoves };
  }

  bodyPath(id: string): string {
    return path.join(this.queueDir, `${id}.eml`);
  }

  private metaPath(id: string): string {
    return path.join(this.queueDir, `${id}.json`);
  }

  private tmpPath(id: string, ext: string): string {
    return path.join(this.tmpDir, `${id}.${process.pid}.${++this.tmpCounter}.${ext}`);
  }

  /** Writes a new message durably. When this resolves the message is safe to acknowledge. */
  async accept(body: Readable, entry: NewEntry): Promise<QueueEntry> {
    const tmpBody = this.tmpPath(entry.id, 'eml');
    const tmpMeta = this.tmpPath(entry.id, 'json');
    let full: QueueEntry | undefined;
    try {
      // The envelope is written and fsynced while the body's fsync runs: both are on disk
      // before the renames, as before, with one fsync wait less per message.
      await writeStreamDurably(tmpBody, body, (size) => {
        full = { ...entry, size };
        return writeFileDurably(tmpMeta, JSON.stringify(full));
      });
    } catch (err) {
      await unlink(tmpMeta).catch(() => undefined);
      throw err;
    }
    if (!full) throw new Error('spool: the envelope was not written');
    try {
      await rename(tmpBody, this.bodyPath(entry.id));
      await rename(tmpMeta, this.metaPath(entry.id));
      await this.queueSync.sync();
    } catch (err) {
      // Undo in the reverse order: without its .json the body is not a message.
      await unlink(this.metaPath(entry.id)).catch(() => undefined);
      await unlink(tmpMeta).catch(() => undefined);
      await unlink(this.bodyPath(entry.id)).catch(() => undefined);
      await unlink(tmpBody).catch(() => undefined);
      throw err;
    }
    return full;
  }

  /** Reads a message's state; undefined when it is no longer queued (delivered or deleted). */
  async read(id: string): Promise<QueueEntry | undefined> {
    try {
      return JSON.parse(await readFile(this.metaPath(id), 'utf8')) as QueueEntry;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  /** Rewrites the state of a message (never its body), atomically and durably. */
  async update(entry: QueueEntry): Promise<void> {
    await replaceFileDurably(this.tmpPath(entry.id, 'json'), this.metaPath(entry.id), JSON.stringify(entry));
    await this.queueSync.sync();
  }

  /** Removes a message that is done. The .json goes first, so a crash leaves at most a body to sweep. */
  async remove(id: string): Promise<boolean> {
    try {
      await unlink(this.metaPath(id));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
    await unlink(this.bodyPath(id)).catch(() => undefined);
    return true;
  }

  /** Ids of all queued messages, oldest first (ids sort by arrival time). */
  async list(): Promise<string[]> {
    const names = await readdir(this.queueDir);
    return names
      .filter((n) => n.endsWith('.json'))
      .map((n) => n.slice(0, -5))
      .filter((id) => QUEUE_ID_PATTERN.test(id))
      .sort();
  }

  /** Moves a message to failed/ (the dead letters) with the reason it could not be delivered. */
  async moveToFailed(entry: QueueEntry, reason: string): Promise<void> {
    // Dead letter first, then the body, then the queue's envelope: a crash at any point
    // leaves either the message still queued, or a complete dead letter that init() finishes.
    const dead: DeadLetter = { ...entry, failedAt: Date.now(), reason };
    await replaceFileDurably(
      this.tmpPath(entry.id, 'json'),
      path.join(this.failedDir, `${entry.id}.json`),
      JSON.stringify(dead, null, 2),
    );
    const body = path.join(this.failedDir, `${entry.id}.eml`);
    await rename(this.bodyPath(entry.id), body).catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
    await fsyncDir(this.failedDir);
    await unlink(this.metaPath(entry.id)).catch(() => undefined);
  }

  async listFailed(): Promise<DeadLetter[]> {
    const names = await readdir(this.failedDir).catch(() => [] as string[]);
    const out: DeadLetter[] = [];
    for (const name of names.filter((n) => n.endsWith('.json')).sort()) {
      try {
        out.push(JSON.parse(await readFile(path.join(this.failedDir, name), 'utf8')) as DeadLetter);
      } catch {
        // A half-written dead letter cannot exist (written via rename); ignore foreign files.
      }
    }
    return out;
  }

  /** Puts a dead letter back in the queue, its failed recipients pending again. */
  async requeue(id: string, now = Date.now()): Promise<QueueEntry | undefined> {
    const metaFile = path.join(this.failedDir, `${id}.json`);
    let dead: DeadLetter;
    try {
      dead = JSON.parse(await readFile(metaFile, 'utf8')) as DeadLetter;
    } catch {
      return undefined;
    }
    const { failedAt: _f, reason: _r, ...entry } = dead;
    const requeued: QueueEntry = {
      ...entry,
      recipients: entry.recipients.map((r) => (r.status === 'failed' ? { ...r, status: 'pending' } : r)),
      createdAt: now,
      attempts: 0,
      nextAttemptAt: now,
    };
    await copyFile(path.join(this.failedDir, `${id}.eml`), this.bodyPath(id));
    await fsyncFile(this.bodyPath(id));
    await this.update(requeued);
    await unlink(metaFile);
    await unlink(path.join(this.failedDir, `${id}.eml`)).catch(() => undefined);
    return requeued;
  }

  /** Writes a message that the relay itself made (a bounce) into the queue. */
  async acceptBuffer(data: Buffer, entry: NewEntry): Promise<QueueEntry> {
    return this.accept(Readable.from([data]), entry);
  }

  async isWritable(): Promise<boolean> {
    const probe = this.tmpPath('healthz', 'probe');
    try {
      await writeFileDurably(probe, 'ok');
      await unlink(probe);
      return true;
    } catch {
      return false;
    }
  }
}

async function exists(file: string): Promise<boolean> {
  return stat(file).then(
    () => true,
    () => false,
  );
}
