// Durable file-system primitives: a file is only "there" once its bytes and the directory
// entry that names it have both reached the disk (chasquid's safeio, Postfix's fsync-on-queue).
import { isAscii } from 'node:buffer';
import fs from 'node:fs';
import { rename, unlink } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { crc32 } from 'node:zlib';

/**
 * open, write and close, made through libuv's thread pool (`pooled`) or on the calling thread
 * (`inline`); fsync always goes through the pool, since it waits for the disk.
 *
 * On its own, a message is written faster inline: a trip through the pool costs more than the
 * syscall (measured here: an open + 2 KB write + close took 170–225 µs of CPU through the pool,
 * 20–90 µs inline), and the accept latency fell by about a quarter. Under load the pool is
 * faster: with every operation inline, 20 sessions got a quarter to a third fewer messages a
 * second through, most likely because a create or an unlink can wait for the journal commit of
 * another message's fsync, and every session waits with it. So the spool chooses per message
 * (spool.ts, accept), and removals stay in the pool.
 */
export interface FileOps {
  open(file: string, flags: string, mode?: number): Promise<number>;
  /** Resolves the number of bytes written. */
  write(fd: number, data: Buffer, offset: number, length: number): Promise<number>;
  close(fd: number): Promise<void>;
}

// fs's callback API, looked up at each call (as fs/promises does), not captured once at load.
type Callback<T> = (err: NodeJS.ErrnoException | null, value: T) => void;
function inPool<T>(call: (done: Callback<T>) => void): Promise<T> {
  return new Promise((resolve, reject) => call((err, value) => (err ? reject(err) : resolve(value))));
}

export const pooled: FileOps = {
  open: (file, flags, mode) => inPool((done) => fs.open(file, flags, mode, done)),
  write: (fd, data, offset, length) => inPool((done) => fs.write(fd, data, offset, length, null, done)),
  close: (fd) => inPool((done) => fs.close(fd, (err) => done(err, undefined))),
};

export const inline: FileOps = {
  open: async (file, flags, mode) => fs.openSync(file, flags, mode),
  write: async (fd, data, offset, length) => fs.writeSync(fd, data, offset, length),
  close: async (fd) => fs.closeSync(fd),
};

/** Larger writes go through the pool whatever the choice: they may wait for the disk's writeback. */
const INLINE_WRITE_MAX = 64 * 1024;

/**
 * An unlink through the thread pool, with fs's callback API: fs/promises' unlink costs the
 * main thread more, and a delivered message makes two.
 */
export function unlinkFile(file: string): Promise<void> {
  return inPool((done) => fs.unlink(file, (err) => done(err, undefined)));
}

/** An fsync, through the thread pool. */
export function syncFd(fd: number): Promise<void> {
  return inPool((done) => fs.fsync(fd, (err) => done(err, undefined)));
}

export async function fsyncDir(dir: string): Promise<void> {
  return fsyncFile(dir);
}

export async function fsyncFile(file: string): Promise<void> {
  const fd = await pooled.open(file, 'r');
  try {
    await syncFd(fd);
  } finally {
    await pooled.close(fd);
  }
}

/**
 * Writes everything `source` yields into an open file (not fsynced: the caller decides when),
 * and returns the byte count and the CRC-32 of what was written, and whether any byte was
 * outside ASCII (`eightBit`: such a body must leave with BODY=8BITMIME). With `keepUpTo`, a
 * body no larger than that is also returned whole, as written (`kept`). With `trailer`, what it
 * returns for the body is written after the body, in the same write as its last bytes (a small
 * message then costs one write); it counts in none of them.
 */
export async function streamInto(
  ops: FileOps,
  fd: number,
  source: Readable,
  keepUpTo = 0,
  trailer?: (body: WrittenBody) => Buffer,
): Promise<WrittenBody & { kept?: Buffer }> {
  let bytes = 0;
  let crc = 0;
  let eightBit = false;
  let kept: Buffer[] | undefined = keepUpTo > 0 ? [] : undefined;
  // Small chunks (a client writing line by line) are gathered into larger writes.
  let batch: Buffer[] = [];
  let batchBytes = 0;
  const flush = async (last: boolean) => {
    const data = batch.length === 1 ? batch[0]! : Buffer.concat(batch);
    crc = crc32(data, crc);
    // isAscii is native (SIMD): a few nanoseconds a kilobyte, once the first 8-bit byte is seen none.
    eightBit ||= !isAscii(data);
    bytes += batchBytes;
    if (kept && bytes <= keepUpTo) kept.push(data);
    else kept = undefined;
    batch = [];
    batchBytes = 0;
    const tail = last && trailer ? trailer({ bytes, crc32: crc, eightBit }) : undefined;
    await writeAll(fd, tail ? Buffer.concat([data, tail]) : data, ops);
  };
  for await (const chunk of source as AsyncIterable<Buffer>) {
    batch.push(chunk);
    batchBytes += chunk.length;
    if (batchBytes >= 64 * 1024) await flush(false);
  }
  if (batchBytes || trailer) await flush(true);
  const whole = kept && (kept.length === 1 ? kept[0]! : Buffer.concat(kept));
  return { bytes, crc32: crc, eightBit, ...(whole ? { kept: whole } : {}) };
}

/** What streamInto wrote: its size, its CRC-32, whether it has a byte outside ASCII. */
export interface WrittenBody {
  bytes: number;
  crc32: number;
  eightBit: boolean;
}

export async function fileExists(file: string): Promise<boolean> {
  return fs.promises.stat(file).then(
    () => true,
    () => false,
  );
}

/** A small JSON file's value; undefined when it is missing or not JSON (a torn or foreign file). */
export async function readJsonFile<T>(file: string): Promise<T | undefined> {
  try {
    return JSON.parse(await fs.promises.readFile(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

/** The CRC-32 of all a stream yields (a stored body: one-file.ts readBody). */
export async function streamCrc32(source: Readable): Promise<number> {
  let crc = 0;
  for await (const chunk of source as AsyncIterable<Buffer>) crc = crc32(chunk, crc);
  return crc;
}

/** Writes all of `data` at the file's position. */
export async function writeAll(fd: number, data: Buffer, ops: FileOps = pooled): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    const left = data.length - offset;
    offset += await (left <= INLINE_WRITE_MAX ? ops : pooled).write(fd, data, offset, left);
  }
}

/** Writes a whole small file and fsyncs it (not the directory: the caller renames it into place). */
export async function writeFileDurably(file: string, data: string | Buffer): Promise<void> {
  const fd = await pooled.open(file, 'w', 0o600); // PRIVATE_FILE_MODE (modes.ts)
  try {
    await writeAll(fd, typeof data === 'string' ? Buffer.from(data) : data);
    await syncFd(fd);
  } catch (err) {
    await closeQuietly(fd);
    await unlink(file).catch(() => undefined);
    throw err;
  }
  await pooled.close(fd);
}

/** Atomically replaces `target` with `data` via a temp file in `tmpDir` on the same file system. */
export async function replaceFileDurably(
  tmpFile: string,
  target: string,
  data: string | Buffer,
): Promise<void> {
  await writeFileDurably(tmpFile, data);
  try {
    await rename(tmpFile, target);
  } catch (err) {
    await unlink(tmpFile).catch(() => undefined);
    throw err;
  }
}

export async function closeQuietly(fd: number, ops: FileOps = pooled): Promise<void> {
  await ops.close(fd).catch(() => undefined);
}
