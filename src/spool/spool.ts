// The durable queue on local disk. A message is two files in queue/: the body <id>.eml,
// written once, and the envelope/state <id>.json, rewritten (via tmp/ and a rename) after each
// attempt.
//
// Accepting a message costs one fsync wait after the client's final dot, as in Postfix:
// - When DATA starts, both files are created in queue/, empty, and the directory fsync that
//   makes their names durable starts at once (group-committed), while the body still arrives.
// - At the end of the body the envelope is written (it carries the body's size and CRC-32); then
//   the body's fsync and the envelope's run together, so that one journal commit can take both.
// - Only when all three fsyncs are done may the listener answer 250.
// What a crash can leave, and how it is recognised (none of it was ever acknowledged):
// - a body without a .json, or an empty or unreadable .json: swept (init, read);
// - a complete .json whose body did not all reach the disk: its CRC-32 does not match. A message
//   read back after a restart is checked before its first attempt (verifyBody); a mismatch goes
//   to failed/ with the reason, never to the ESP. The check is dropped from the .json once the
//   body is known to be durable (the next update).
import { copyFile, mkdir, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { DirSyncer } from './dir-syncer.js';
import {
  closeQuietly,
  fileCrc32,
  fsyncDir,
  fsyncFile,
  inline,
  pooled,
  readJsonFile,
  replaceFileDurably,
  streamInto,
  syncFd,
  unlinkFile,
  writeAll,
  writeFileDurably,
} from './fsync.js';
import { QUEUE_ID_PATTERN, queueIdTime, type QueueEntry } from './entry.js';
import { HoldFolder } from './hold.js';
import { makePrivateDir, PRIVATE_FILE_MODE, tightenDirs, type Tightened } from './modes.js';

export type NewEntry = Omit<QueueEntry, 'size' | 'bodyCrc32'>;

/**
 * Bodies up to this size come back from accept in memory, with the queued item, for its first
 * attempt (queue/just-queued.ts). Printers' scans are larger and stream from disk.
 */
export const KEPT_BODY_MAX = 64 * 1024;

/**
 * A message just written durably, as the listener hands it to the queue: its state, and its
 * body's bytes (exactly as written) when no larger than KEPT_BODY_MAX.
 */
export interface QueuedMessage {
  entry: QueueEntry;
  body?: Buffer;
}

/** A queued message's body: its file, and for a small message just accepted the same bytes. */
export interface MessageBody {
  path: string;
  data?: Buffer;
}

export interface DeadLetter extends QueueEntry {
  failedAt: number;
  reason: string;
}

export class Spool {
  readonly queueDir: string;
  readonly tmpDir: string;
  readonly failedDir: string;
  readonly outboxDir: string;
  /** Messages on hold (hold.ts): never attempted until released. */
  readonly held: HoldFolder;
  private readonly queueSync: DirSyncer;
  private tmpCounter = 0;
  /** Ids being written by accept() now: their .json may be empty for a while, and that is fine. */
  private readonly receiving = new Set<string>();

  constructor(readonly dir: string) {
    // Normalised once here; the per-message paths below are built from it by concatenation.
    this.queueDir = path.join(dir, 'queue');
    this.tmpDir = path.join(dir, 'tmp');
    this.failedDir = path.join(dir, 'failed');
    this.outboxDir = path.join(dir, 'outbox');
    this.held = new HoldFolder(this.queueDir, path.join(dir, 'hold'));
    this.queueSync = new DirSyncer(this.queueDir);
  }

  /**
   * Creates the folders (0700; modes.ts), tightens those left looser, and sweeps what a crash
   * left behind. Returns what was swept, and the folders whose mode was tightened.
   */
  async init(): Promise<{
    tmpFiles: number;
    orphanBodies: number;
    interruptedMoves: number;
    reunited: number;
    tightened: Tightened[];
  }> {
    // The spool's own folder keeps the mode it was given (systemd's StateDirectoryMode, 0750).
    await mkdir(this.dir, { recursive: true, mode: 0o750 });
    const tightened = await tightenDirs([
      this.queueDir,
      this.tmpDir,
      this.failedDir,
      this.outboxDir,
      this.held.holdDir,
      path.join(this.dir, 'tls'),
    ]);
    for (const dir of [this.queueDir, this.tmpDir, this.failedDir]) await makePrivateDir(dir);
    // Before the sweep below: a body a crash left apart from its envelope is no orphan.
    const { reunited } = await this.held.init();
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
        if (await exists(this.failedBodyPath(id))) {
          await unlink(path.join(this.queueDir, name)).catch(() => undefined);
          interruptedMoves++;
        }
      }
    }
    return { tmpFiles, orphanBodies, interruptedMoves, reunited, tightened };
  }

  bodyPath(id: string): string {
    // Joined by hand: path.join normalises every time, and this runs several times a message.
    return `${this.queueDir}${path.sep}${id}.eml`;
  }

  private metaPath(id: string): string {
    return `${this.queueDir}${path.sep}${id}.json`;
  }

  private tmpPath(id: string, ext: string): string {
    return path.join(this.tmpDir, `${id}.${process.pid}.${++this.tmpCounter}.${ext}`);
  }

  /** Writes a new message durably. When this resolves the message is safe to acknowledge. */
  async accept(body: Readable, entry: NewEntry): Promise<QueueEntry> {
    return (await this.acceptMessage(body, entry)).entry;
  }

  /**
   * accept(), resolving to the queued item: the state, and the body's bytes when small, for the
   * queue's first attempt (which then need not read the file back).
   */
  async acceptMessage(body: Readable, entry: NewEntry): Promise<QueuedMessage> {
    const bodyFile = this.bodyPath(entry.id);
    const metaFile = this.metaPath(entry.id);
    const fds: number[] = [];
    this.receiving.add(entry.id);
    // Alone, a message is written inline; alongside others, through the thread pool (fsync.ts).
    const ops = this.receiving.size === 1 ? inline : pooled;
    try {
      fds.push(await ops.open(bodyFile, 'wx', PRIVATE_FILE_MODE));
      fds.push(await ops.open(metaFile, 'wx', PRIVATE_FILE_MODE));
      const [bodyFd, metaFd] = fds as [number, number];
      // Their names reach the disk while the body arrives (see the top of this file).
      const namesSynced = this.queueSync.sync();
      namesSynced.catch(() => undefined); // awaited below; a failure before then is not unhandled
      const { bytes, crc32, kept } = await streamInto(ops, bodyFd, body, KEPT_BODY_MAX);
      const full: QueueEntry = { ...entry, size: bytes, bodyCrc32: crc32 };
      // The envelope is written before either fsync starts, so that one journal commit can take
      // both files' data to the disk.
      await writeAll(metaFd, Buffer.from(JSON.stringify(full)), ops);
      const steps = await Promise.allSettled([syncFd(bodyFd), syncFd(metaFd), namesSynced]);
      const failed = steps.find((step) => step.status === 'rejected');
      if (failed) throw failed.reason;
      // Durable already: a failed close cannot undo that, and the descriptor is gone either way.
      await Promise.all(fds.splice(0).map((fd) => closeQuietly(fd, ops)));
      return kept ? { entry: full, body: kept } : { entry: full };
    } catch (err) {
      await Promise.all(fds.map((fd) => closeQuietly(fd, ops)));
      // The .json first: without it the body is not a message.
      await unlink(metaFile).catch(() => undefined);
      await unlink(bodyFile).catch(() => undefined);
      throw err;
    } finally {
      this.receiving.delete(entry.id);
    }
  }

  /**
   * Whether a message read back from the disk has all of its body: false when a crash came
   * before the body's fsync (it was never acknowledged). True when there is nothing to check.
   */
  async verifyBody(entry: QueueEntry): Promise<boolean> {
    if (entry.bodyCrc32 === undefined) return true;
    try {
      return (await fileCrc32(this.bodyPath(entry.id))) === entry.bodyCrc32;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
  }

  /**
   * Reads a message's state; undefined when it is not a queued message: delivered, deleted, being
   * received now, or the debris of a crash during its reception (see sweepIfIncomplete).
   */
  async read(id: string): Promise<QueueEntry | undefined> {
    const text = await this.readMeta(id);
    if (text === undefined) return undefined;
    try {
      return JSON.parse(text) as QueueEntry;
    } catch {
      return undefined;
    }
  }

  /**
   * Removes a message whose .json is empty or cut short and that is not being received now: a
   * crash came during its reception, before its 250. Only the relay that owns the spool calls
   * this (it alone knows what it is receiving). True when something was removed.
   */
  async sweepIfIncomplete(id: string): Promise<boolean> {
    if (this.receiving.has(id)) return false;
    const text = await this.readMeta(id);
    if (text === undefined) return false;
    try {
      JSON.parse(text);
      return false;
    } catch {
      return this.remove(id);
    }
  }

  private async readMeta(id: string): Promise<string | undefined> {
    try {
      return await readFile(this.metaPath(id), 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  /** Rewrites the state of a message (never its body), atomically and durably. */
  async update(entry: QueueEntry): Promise<void> {
    // The body is durable by now (its fsync was seen, or verifyBody checked it): no more check.
    const { bodyCrc32: _checked, ...state } = entry;
    await replaceFileDurably(this.tmpPath(entry.id, 'json'), this.metaPath(entry.id), JSON.stringify(state));
    await this.queueSync.sync();
  }

  /** Removes a message that is done. The .json goes first, so a crash leaves at most a body to sweep. */
  async remove(id: string): Promise<boolean> {
    try {
      await unlinkFile(this.metaPath(id));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
      throw err;
    }
    await unlinkFile(this.bodyPath(id)).catch(() => undefined);
    return true;
  }

  /**
   * Puts a queued message on hold (hold.ts). False when no such message is queued. The running
   * queue must forget() it first (queue-admin.ts does), so no kept copy is used later.
   */
  async hold(id: string): Promise<boolean> {
    return this.held.hold(id);
  }

  /**
   * How long the oldest queued message has waited, in ms (0 when the queue is empty or cannot
   * be read). Held messages are not in the queue folder, so they do not count.
   */
  async oldestAgeMs(now = Date.now()): Promise<number> {
    let ids: string[];
    try {
      ids = await this.ids();
    } catch {
      return 0;
    }
    // Ids sort by arrival: the smallest is the oldest (a scan, not a sort: this runs per scrape).
    let oldest: string | undefined;
    for (const id of ids) if (oldest === undefined || id < oldest) oldest = id;
    if (oldest === undefined) return 0;
    const entry = await this.read(oldest).catch(() => undefined);
    const since = entry?.createdAt ?? queueIdTime(oldest);
    return since === undefined ? 0 : Math.max(0, now - since);
  }

  /** Ids of all queued messages, oldest first (ids sort by arrival time). */
  async list(): Promise<string[]> {
    return (await this.ids()).sort();
  }

  /** Ids of all queued messages, in no order (the oldest is the smallest). */
  async ids(): Promise<string[]> {
    const names = await readdir(this.queueDir);
    return names
      .filter((n) => n.endsWith('.json'))
      .map((n) => n.slice(0, -5))
      .filter((id) => QUEUE_ID_PATTERN.test(id));
  }

  /** Moves a message to failed/ (the dead letters) with the reason it could not be delivered. */
  async moveToFailed(entry: QueueEntry, reason: string): Promise<void> {
    // Dead letter first, then the body, then the queue's envelope: a crash at any point
    // leaves either the message still queued, or a complete dead letter that init() finishes.
    const dead: DeadLetter = { ...entry, failedAt: Date.now(), reason };
    await replaceFileDurably(
      this.tmpPath(entry.id, 'json'),
      this.failedMetaPath(entry.id),
      JSON.stringify(dead, null, 2),
    );
    const body = this.failedBodyPath(entry.id);
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
      // A half-written dead letter cannot exist (written via rename); foreign files are skipped.
      const dead = await this.readFailed(name.slice(0, -5));
      if (dead) out.push(dead);
    }
    return out;
  }

  failedBodyPath(id: string): string {
    return path.join(this.failedDir, `${id}.eml`);
  }

  private failedMetaPath(id: string): string {
    return path.join(this.failedDir, `${id}.json`);
  }

  /** One dead letter, or undefined when there is none by that id. */
  readFailed(id: string): Promise<DeadLetter | undefined> {
    return readJsonFile<DeadLetter>(this.failedMetaPath(id));
  }

  /** Deletes a dead letter for good. False when there is none by that id. */
  async removeFailed(id: string): Promise<boolean> {
    try {
      await unlink(this.failedMetaPath(id));
    } catch {
      return false;
    }
    await unlink(this.failedBodyPath(id)).catch(() => undefined);
    return true;
  }

  /** Puts a dead letter back in the queue, its failed recipients pending again. */
  async requeue(id: string, now = Date.now()): Promise<QueueEntry | undefined> {
    const dead = await this.readFailed(id);
    if (!dead) return undefined;
    const { failedAt: _f, reason: _r, ...entry } = dead;
    const requeued: QueueEntry = {
      ...entry,
      recipients: entry.recipients.map((r) => (r.status === 'failed' ? { ...r, status: 'pending' } : r)),
      createdAt: now,
      attempts: 0,
      nextAttemptAt: now,
    };
    await copyFile(this.failedBodyPath(id), this.bodyPath(id));
    await fsyncFile(this.bodyPath(id));
    await this.update(requeued);
    await unlink(this.failedMetaPath(id));
    await unlink(this.failedBodyPath(id)).catch(() => undefined);
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
