// The relay's side of the maildrop (Postfix's pickup): files `smarthost sendmail` left in
// <spool>/maildrop/ are taken into the queue as the source `sendmail`, at start, whenever the
// folder changes (fs.watch) and every few seconds anyway (fs.watch misses events on some file
// systems), and at once when sendmail asks over the control socket (`pickup`).
//
// Any local user allowed to write the folder can put anything there, so every file is hostile
// input: opened without following a symbolic link, and only a regular file with one link (not
// a hard link to a file of the relay's own) and of a bounded length is read; its header line is
// checked (format.ts) and its declared length must match the file's, so a file cut short or
// added to is not mail. The message then goes through the same checks and the same receive
// path as SMTP (submit.ts). A file that is not mail, or that the policy refuses for good, is
// removed and the log says why; one refused for now (a rate limit, a full disk) stays for a
// later look. The file is removed only once the message is in the queue (fsynced): a crash in
// between sends it twice rather than never.
import fs, { constants, type FSWatcher } from 'node:fs';
import { chmod, mkdir, open, readdir, rmdir, stat, unlink, type FileHandle } from 'node:fs/promises';
import path from 'node:path';
import { Readable } from 'node:stream';
import { LRUCache } from 'lru-cache';
import type { Logger } from '../log.js';
import type { PolicyEngine } from '../policy/engine.js';
import { SmtpError } from '../smtp/errors.js';
import type { QueueEntry } from '../spool/entry.js';
import { fsyncDir } from '../spool/fsync.js';
import type { Spool } from '../spool/spool.js';
import { DROP_NAME, DropFormatError, MAX_HEADER_LINE, parseHeaderLine, TEMP_PREFIX } from './format.js';
import { submitLocal } from './submit.js';

/**
 * rwx for the relay, -wx for its group, nothing for others; sticky (a writer cannot remove or
 * replace another's file) and setgid (files get the folder's group, which the relay reads with).
 * Like Postfix's maildrop (1730, group postdrop). See README, "Linux servers and scripts".
 */
export const MAILDROP_DIR_MODE = 0o3730;
/** A temp file older than this was left by a sendmail that died while writing. */
const STALE_TEMP_MS = 24 * 3600_000;
/** How long a message refused for now (a rate limit) waits before the next look. */
const DEFER_MS = 30_000;

export type PickupResult =
  | { status: 'queued'; id: string }
  | { status: 'refused'; code: number; enhanced: string; message: string; reason: string }
  | { status: 'deferred'; message: string }
  | { status: 'gone' };

export interface PickupDeps {
  spoolDir: string;
  policy: () => PolicyEngine;
  spool: Spool;
  log: Logger;
  /** A message is in the queue: hand it over (as the listener's `accepted`). */
  accepted: (entry: QueueEntry) => void;
  /** How often the folder is looked at without an fs.watch event (default 5 s). */
  pollMs?: number;
}

export function maildropDir(spoolDir: string): string {
  return path.join(spoolDir, 'maildrop');
}

/** Creates the maildrop folder (MAILDROP_DIR_MODE) when missing; an existing one keeps its mode. */
export async function ensureMaildrop(spoolDir: string): Promise<string> {
  const dir = maildropDir(spoolDir);
  try {
    await mkdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return dir;
    throw err;
  }
  // mkdir takes neither the sticky nor the setgid bit from its mode argument (and the umask).
  await chmod(dir, MAILDROP_DIR_MODE);
  return dir;
}

export class Pickup {
  readonly dir: string;
  private readonly inProgress = new Map<string, Promise<PickupResult>>();
  /** What became of files taken lately: sendmail may ask after the watcher took its file. */
  private readonly recent = new LRUCache<string, PickupResult>({ max: 1000, ttl: 10 * 60_000 });
  private readonly notBefore = new Map<string, number>();
  /** Entries already reported as impossible to remove (a folder planted here). */
  private readonly stuck = new Set<string>();
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  private debounce: NodeJS.Timeout | undefined;
  private scanning: Promise<void> | undefined;
  private again = false;
  private stopped = false;

  constructor(private readonly deps: PickupDeps) {
    this.dir = maildropDir(deps.spoolDir);
  }

  /** Creates the folder, takes up what is there, then watches it. */
  async start(): Promise<void> {
    await ensureMaildrop(this.deps.spoolDir);
    await this.scan();
    try {
      this.watcher = fs.watch(this.dir, () => this.soon());
      this.watcher.on('error', () => undefined);
    } catch {
      // No fs.watch here: the poll below still finds every file.
    }
    this.timer = setInterval(() => this.soon(), this.deps.pollMs ?? 5_000);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watcher?.close();
    clearInterval(this.timer);
    clearTimeout(this.debounce);
    await this.scanning;
    await Promise.allSettled([...this.inProgress.values()]);
  }

  private soon(): void {
    if (this.stopped || this.debounce) return;
    this.debounce = setTimeout(() => {
      this.debounce = undefined;
      void this.scan();
    }, 20);
  }

  /** Looks at every file in the folder once; a scan asked for meanwhile runs after it. */
  scan(): Promise<void> {
    if (this.scanning) {
      this.again = true;
      return this.scanning;
    }
    this.scanning = this.scanOnce()
      .catch((err: Error) => {
        this.deps.log.error(`cannot read the maildrop folder ${this.dir}: ${err.message}`, {
          event: 'maildrop_error',
          error: err.message,
        });
      })
      .finally(() => {
        this.scanning = undefined;
        if (this.again && !this.stopped) {
          this.again = false;
          void this.scan();
        }
      });
    return this.scanning ?? Promise.resolve();
  }

  private async scanOnce(): Promise<void> {
    const now = Date.now();
    for (const name of await readdir(this.dir)) {
      if (this.stopped) return;
      if (DROP_NAME.test(name)) {
        if ((this.notBefore.get(name) ?? 0) > now) continue;
        await this.take(name);
      } else if (name.startsWith(TEMP_PREFIX)) {
        const info = await stat(path.join(this.dir, name)).catch(() => undefined);
        if (info && now - info.mtimeMs > STALE_TEMP_MS)
          await unlink(path.join(this.dir, name)).catch(() => undefined);
      } else {
        await this.discard(name, 'not a maildrop file name');
      }
    }
  }

  /** Takes the file `name` into the queue now (or says what became of it). */
  take(name: string): Promise<PickupResult> {
    if (!DROP_NAME.test(name)) return Promise.resolve({ status: 'gone' });
    const running = this.inProgress.get(name);
    if (running) return running;
    const done = this.recent.get(name);
    if (done) return Promise.resolve(done);
    if (this.stopped) return Promise.resolve({ status: 'deferred', message: 'the relay is stopping' });
    const run = this.process(name)
      .catch((err: Error): PickupResult => {
        this.deps.log.error(`could not take up maildrop file ${name}: ${err.message}`, {
          event: 'maildrop_error',
          file: name,
          error: err.message,
        });
        this.notBefore.set(name, Date.now() + DEFER_MS);
        return { status: 'deferred', message: err.message };
      })
      .then((result) => {
        if (result.status !== 'deferred') {
          this.recent.set(name, result);
          this.notBefore.delete(name);
        }
        return result;
      })
      .finally(() => this.inProgress.delete(name));
    this.inProgress.set(name, run);
    return run;
  }

  private async process(name: string): Promise<PickupResult> {
    const file = path.join(this.dir, name);
    let handle: FileHandle;
    try {
      // O_NONBLOCK: a FIFO planted here must not hang the relay on open.
      handle = await open(file, constants.O_RDONLY | constants.O_NOFOLLOW | constants.O_NONBLOCK);
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') return { status: 'gone' };
      if (code === 'ELOOP') return this.discard(name, 'a symbolic link');
      if (code === 'EACCES' || code === 'EPERM') return this.discard(name, 'not readable by the relay');
      throw err;
    }
    let body: Readable | undefined;
    try {
      const info = await handle.stat();
      if (!info.isFile()) return await this.discard(name, 'not a regular file');
      if (info.nlink !== 1) return await this.discard(name, 'a file with more than one link (a hard link)');
      const policy = this.deps.policy();
      const local = policy.sources.local;
      const maxSize = Math.max(policy.maxAdvertisedSize, local?.policy.maxMessageSize ?? 0);
      if (info.size > maxSize + MAX_HEADER_LINE) return await this.discard(name, 'too large', info.uid);
      let header: { line: string; length: number };
      let parsed: ReturnType<typeof parseHeaderLine>;
      try {
        header = await readHeader(handle);
        parsed = parseHeaderLine(header.line);
      } catch (err) {
        if (err instanceof DropFormatError) return await this.discard(name, err.message, info.uid);
        throw err;
      }
      const { envelope, size } = parsed;
      if (header.length + size !== info.size) {
        return await this.discard(
          name,
          'its length does not match its header: cut short or added to',
          info.uid,
        );
      }
      body =
        size === 0
          ? Readable.from([])
          : fs.createReadStream('', {
              fd: handle.fd,
              start: header.length,
              end: info.size - 1,
              autoClose: false,
            });
      let entry: QueueEntry;
      try {
        entry = await submitLocal(
          body,
          { from: envelope.from, recipients: envelope.recipients, size, uid: info.uid },
          { policy, spool: this.deps.spool, log: this.deps.log },
        );
      } catch (err) {
        if (!(err instanceof SmtpError)) throw err;
        if (err.temporary && err.reason !== 'spool_error' && err.reason !== 'disk_full') {
          this.notBefore.set(name, Date.now() + DEFER_MS);
          return { status: 'deferred', message: `${err.code} ${err.message}` };
        }
        if (err.temporary) throw err;
        return await this.refused(name, err, info.uid, envelope.from);
      }
      await unlink(file);
      await fsyncDir(this.dir);
      this.deps.accepted(entry);
      return { status: 'queued', id: entry.id };
    } finally {
      body?.destroy();
      await handle.close().catch(() => undefined);
    }
  }

  /** The policy refused the message for good: it is removed, and the log says why. */
  private async refused(name: string, err: SmtpError, uid: number, from: string): Promise<PickupResult> {
    await unlink(path.join(this.dir, name)).catch(() => undefined);
    this.deps.log.warn(`maildrop message refused: ${err.code} ${err.message}`, {
      event: 'refused',
      reason: err.reason,
      client: 'local',
      source: 'sendmail',
      uid,
      from,
      file: name,
    });
    return {
      status: 'refused',
      code: err.code,
      enhanced: err.enhanced,
      message: err.text,
      reason: err.reason,
    };
  }

  /** A file that is not mail: removed (a folder cannot be, and is reported once). */
  private async discard(name: string, why: string, uid?: number): Promise<PickupResult> {
    const file = path.join(this.dir, name);
    const removed = await unlink(file).then(
      () => true,
      () =>
        rmdir(file).then(
          () => true,
          () => false,
        ),
    );
    if (removed || !this.stuck.has(name)) {
      if (!removed) this.stuck.add(name);
      this.deps.log.warn(`maildrop: ${removed ? 'removed' : 'cannot remove'} ${name}: ${why}`, {
        event: 'maildrop_discarded',
        file: name,
        reason: why,
        uid,
      });
    }
    return {
      status: 'refused',
      code: 554,
      enhanced: '5.6.0',
      message: `not a valid maildrop file: ${why}`,
      reason: 'maildrop_invalid',
    };
  }
}

/** The first line of the file, without its \n, and its length with the \n. */
async function readHeader(handle: FileHandle): Promise<{ line: string; length: number }> {
  const chunks: Buffer[] = [];
  let read = 0;
  for (;;) {
    const buffer = Buffer.alloc(16 * 1024);
    const { bytesRead } = await handle.read(buffer, 0, buffer.length, read);
    if (bytesRead === 0) throw new DropFormatError('the header line is cut short');
    const chunk = buffer.subarray(0, bytesRead);
    const newline = chunk.indexOf(0x0a);
    if (newline >= 0) {
      chunks.push(chunk.subarray(0, newline));
      const line = Buffer.concat(chunks);
      return { line: line.toString('utf8'), length: line.length + 1 };
    }
    chunks.push(chunk);
    read += bytesRead;
    if (read > MAX_HEADER_LINE) throw new DropFormatError('the header line is too long');
  }
}
