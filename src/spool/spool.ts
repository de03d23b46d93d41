// The durable queue on local disk. A new message is one file in queue/, <id>.msg: its body,
// then its envelope (one-file.ts). Its first change of state splits it into the body <id>.eml,
// never written again, and the envelope/state <id>.json, rewritten (via tmp/ and a rename)
// after each attempt. Most messages are delivered at their first attempt and never split.
//
// Accepting a message costs one fsync wait after the client's final dot, as in Postfix:
// - When DATA starts, the .msg is created in queue/ and the directory fsync that makes its name
//   durable starts at once (group-committed), while the body still arrives.
// - At the end of the body the envelope is written after it (it carries the body's size and
//   CRC-32), then the file is fsynced.
// - Only when both fsyncs are done may the listener answer 250.
// What a crash can leave, and how it is recognised (none of it was ever acknowledged):
// - a .msg without a whole envelope, a body without a .json, or an empty or unreadable .json:
//   swept (init, read, sweepIfIncomplete);
// - a whole envelope whose body did not all reach the disk: its CRC-32 does not match. A message
//   read back after a restart is checked before its first attempt (verifyBody); a mismatch goes
//   to failed/ with the reason, never to the ESP. The check is dropped from the .json once the
//   body is known to be durable (the next update).
// - a .json beside a .msg: a split cut short, finished by init.
import { copyFile, mkdir, readdir, readFile, rename, stat, unlink } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { DirSyncer } from './dir-syncer.js';
import {
  closeQuietly,
  fileExists,
  streamCrc32,
  fsyncDir,
  fsyncFile,
  inline,
  pooled,
  replaceFileDurably,
  streamInto,
  syncFd,
  unlinkFile,
  writeFileDurably,
} from './fsync.js';
import { QUEUE_ID_PATTERN, queueIdTime, type QueueEntry } from './entry.js';
import { HoldFolder } from './hold.js';
import { sweepCrashLeftovers, type Swept } from './recovery.js';
import { DeadLetters } from './dead-letters.js';
import { encodeTrailer, readBody, readTrailer, trimToBody } from './one-file.js';
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
  /** Only the file's first `length` bytes are the message (a one-file message: one-file.ts). */
  length?: number;
  data?: Buffer;
}

export type { DeadLetter } from './dead-letters.js';

export class Spool {
  readonly queueDir: string;
  readonly tmpDir: string;
  readonly failedDir: string;
  readonly outboxDir: string;
  /** Messages on hold (hold.ts): never attempted until released. */
  readonly held: HoldFolder;
  /** Messages that could not be delivered, with the reason (dead-letters.ts). */
  readonly failed: DeadLetters;
  private readonly queueSync: DirSyncer;
  private tmpCounter = 0;
  /** Ids being written by accept() now: their .msg has no envelope yet, and that is fine. */
  private readonly receiving = new Set<string>();

  constructor(readonly dir: string) {
    // Normalised once here; the per-message paths below are built from it by concatenation.
    this.queueDir = path.join(dir, 'queue');
    this.tmpDir = path.join(dir, 'tmp');
    this.failedDir = path.join(dir, 'failed');
    this.outboxDir = path.join(dir, 'outbox');
    this.held = new HoldFolder(this.queueDir, path.join(dir, 'hold'));
    this.failed = new DeadLetters(this.failedDir, (id) => this.tmpPath(id, 'json'));
    this.queueSync = new DirSyncer(this.queueDir);
  }

  /**
   * Creates the folders (0700; modes.ts), tightens those left looser, and sweeps what a crash
   * left behind. Returns what was swept, and the folders whose mode was tightened.
   */
  async init(): Promise<Swept & { tightened: Tightened[] }> {
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
    return { ...(await sweepCrashLeftovers(this)), tightened };
  }

  bodyPath(id: string): string {
    // Joined by hand: path.join normalises every time, and this runs several times a message.
    return `${this.queueDir}${path.sep}${id}.eml`;
  }

  private metaPath(id: string): string {
    return `${this.queueDir}${path.sep}${id}.json`;
  }

  /** A new message's one file (one-file.ts). */
  msgPath(id: string): string {
    return `${this.queueDir}${path.sep}${id}.msg`;
  }

  /** Where a queued message's body is read from: its .eml, or the start of its .msg. */
  bodyOf(entry: QueueEntry): MessageBody {
    return entry.oneFile
      ? { path: this.msgPath(entry.id), length: entry.size }
      : { path: this.bodyPath(entry.id) };
  }

  /** The bytes a queued message takes on disk; 0 when it is gone. */
  async storedSize(id: string): Promise<number> {
    for (const file of [this.msgPath(id), this.bodyPath(id)]) {
      const size = await stat(file).then(
        (s) => s.size,
        () => undefined,
      );
      if (size !== undefined) return size;
    }
    return 0;
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
    const file = this.msgPath(entry.id);
    let fd: number | undefined;
    this.receiving.add(entry.id);
    // Alone, a message is written inline; alongside others, through the thread pool (fsync.ts).
    const ops = this.receiving.size === 1 ? inline : pooled;
    try {
      fd = await ops.open(file, 'wx', PRIVATE_FILE_MODE);
      // Its name reaches the disk while the body arrives (see the top of this file).
      const nameSynced = this.queueSync.sync();
      nameSynced.catch(() => undefined); // awaited below; a failure before then is not unhandled
      let full: QueueEntry | undefined;
      // The envelope follows the body, in the same write as its last bytes.
      const { kept } = await streamInto(ops, fd, body, KEPT_BODY_MAX, ({ bytes, crc32, eightBit }) => {
        full = { ...entry, size: bytes, bodyCrc32: crc32, ...(eightBit ? { eightBit } : {}) };
        return encodeTrailer(full);
      });
      const steps = await Promise.allSettled([syncFd(fd), nameSynced]);
      const failed = steps.find((step) => step.status === 'rejected');
      if (failed) throw failed.reason;
      // Durable already: a failed close cannot undo that, and the descriptor is gone either way.
      await closeQuietly(fd, ops);
      fd = undefined;
      const queued: QueueEntry = { ...full!, oneFile: true };
      return kept ? { entry: queued, body: kept } : { entry: queued };
    } catch (err) {
      if (fd !== undefined) await closeQuietly(fd, ops);
      await unlink(file).catch(() => undefined);
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
      return (await streamCrc32(readBody(this.bodyOf(entry)))) === entry.bodyCrc32;
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
    // The .json first: once written, it is the state (a .msg beside it is a split under way).
    const text = await this.readMeta(id);
    if (text === undefined) return readTrailer(this.msgPath(id));
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
    if (text === undefined) {
      // A .msg without a whole envelope: its reception was cut short.
      const file = this.msgPath(id);
      if ((await readTrailer(file)) || !(await fileExists(file))) return false;
      await unlinkFile(file).catch(() => undefined);
      return true;
    }
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
    await this.writeState(state);
  }

  /**
   * Writes a message's .json durably and, if it was one file, splits it (see the top). A split
   * that failed half-way while the relay ran (its .json written, the .msg still there) is
   * finished by the next update, not only by a restart.
   */
  private async writeState(entry: QueueEntry): Promise<void> {
    const { oneFile, ...state } = entry;
    const { id } = entry;
    await replaceFileDurably(this.tmpPath(id, 'json'), this.metaPath(id), JSON.stringify(state));
    const unsplit =
      oneFile || (!(await fileExists(this.bodyPath(id))) && (await fileExists(this.msgPath(id))));
    if (unsplit) await trimToBody(this.msgPath(id), this.bodyPath(id), entry.size);
    await this.queueSync.sync();
  }

  /**
   * Splits a one-file message (one-file.ts) into its .json and .eml, for what moves or shows
   * those (a hold, a dead letter). Nothing to do for any other id.
   */
  private async split(id: string): Promise<void> {
    if (!(await fileExists(this.msgPath(id)))) return;
    const entry = await this.read(id);
    if (entry) await this.writeState({ ...entry, oneFile: true });
  }

  /**
   * Removes a message that is done. The .json goes first, so a crash leaves at most a body to
   * sweep. `layout`, when the caller knows it (a message just delivered: its entry says), spares
   * the unlink of a file that is not there; otherwise both layouts are tried.
   */
  async remove(id: string, layout?: 'one file' | 'split'): Promise<boolean> {
    const removedMsg =
      layout !== 'split' &&
      (await unlinkFile(this.msgPath(id)).then(
        () => true,
        (err: NodeJS.ErrnoException) => {
          if (err.code === 'ENOENT') return false;
          throw err;
        },
      ));
    if (layout === 'one file') return removedMsg;
    try {
      await unlinkFile(this.metaPath(id));
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return removedMsg;
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
    await this.split(id);
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
    const ids = new Set<string>();
    for (const name of names) {
      const id = name.endsWith('.json') ? name.slice(0, -5) : name.endsWith('.msg') ? name.slice(0, -4) : '';
      if (QUEUE_ID_PATTERN.test(id)) ids.add(id);
    }
    return [...ids];
  }

  /** Moves a message to failed/ (the dead letters) with the reason it could not be delivered. */
  async moveToFailed(queued: QueueEntry, reason: string): Promise<void> {
    if (queued.oneFile) await this.writeState(queued);
    const { oneFile: _split, ...entry } = queued;
    // Dead letter first, then the body, then the queue's envelope: a crash at any point
    // leaves either the message still queued, or a complete dead letter that init() finishes.
    await this.failed.write({ ...entry, failedAt: Date.now(), reason });
    const body = this.failed.bodyPath(entry.id);
    await rename(this.bodyPath(entry.id), body).catch(async (err: NodeJS.ErrnoException) => {
      if (err.code !== 'ENOENT') throw err;
    });
    await fsyncDir(this.failedDir);
    await unlink(this.metaPath(entry.id)).catch(() => undefined);
  }

  /** Puts a dead letter back in the queue, its failed recipients pending again. */
  async requeue(id: string, now = Date.now()): Promise<QueueEntry | undefined> {
    const dead = await this.failed.read(id);
    if (!dead) return undefined;
    const { failedAt: _f, reason: _r, ...entry } = dead;
    const requeued: QueueEntry = {
      ...entry,
      recipients: entry.recipients.map((r) => (r.status === 'failed' ? { ...r, status: 'pending' } : r)),
      createdAt: now,
      attempts: 0,
      nextAttemptAt: now,
    };
    await copyFile(this.failed.bodyPath(id), this.bodyPath(id));
    await fsyncFile(this.bodyPath(id));
    await this.update(requeued);
    await this.failed.remove(id);
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
