// Writes a new message's one file (<id>.msg: body, then the envelope trailer of one-file.ts)
// with as few trips through libuv's thread pool as the body allows. Each trip wakes a pool
// thread, and on a virtual machine a wake-up costs the main thread more than the syscall
// itself: under load, dispatching open, write, fsync and close took a fifth of its time.
//
// - A body that arrives whole within the first WRITE_BATCH bytes (nearly every device's
//   message) is held until its end, and the file is only then created, with O_DSYNC: its one
//   write returns once the bytes, and the size and blocks that find them, are on disk, which is
//   what the fsync did. Two trips (create, write) instead of four.
// - A larger body is written as it arrives, into a file created at its first WRITE_BATCH bytes,
//   and fsynced at its end: O_DSYNC there would make every 64 KB write wait for the disk.
// - Either way the directory fsync that makes the file's name durable starts as soon as the file
//   is created (group-committed, dir-syncer.ts), and the close, which never waits for the disk,
//   is made on the calling thread.
// The caller answers 250 only when this resolves: durability is the same on both paths.
import fs from 'node:fs';
import { unlink } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { crc32 } from 'node:zlib';
import { closeQuietly, inline, pooled, syncFd, writeAll, type FileOps } from './fsync.js';
import { PRIVATE_FILE_MODE } from './modes.js';

/** Small chunks (a client writing line by line) are gathered into writes of this size. */
const WRITE_BATCH = 64 * 1024;

/** O_DSYNC where the platform has it (not on Windows: there the fsync path is taken). */
const O_DSYNC: number | undefined = fs.constants.O_DSYNC;

/** A new file's flags: never an existing one; with `durable`, each write waits for the disk. */
function createFlags(durable: boolean): number {
  const { O_WRONLY, O_CREAT, O_EXCL } = fs.constants;
  return O_WRONLY | O_CREAT | O_EXCL | (durable ? O_DSYNC! : 0);
}

export interface NewMessageFile {
  file: string;
  source: Readable;
  /** How to create the file and make the non-durable writes: inline when it is alone (fsync.ts). */
  ops: FileOps;
  /** A body no larger than this comes back whole, as written (`kept`). */
  keepUpTo: number;
  /** The envelope trailer, given the body's size and CRC-32; written in the body's last write. */
  trailer: (body: { bytes: number; crc32: number }) => Buffer;
  /** Makes the file's name durable: the directory's group-committed fsync. */
  syncName: () => Promise<void>;
}

export interface WrittenMessage {
  bytes: number;
  crc32: number;
  kept?: Buffer;
}

/** Writes the file; resolves once the body, its trailer and its name are all on disk. */
export async function writeNewMessageFile(job: NewMessageFile): Promise<WrittenMessage> {
  let fd: number | undefined;
  let durableWrites = false;
  let nameSynced: Promise<void> | undefined;
  const create = async (whole: boolean) => {
    durableWrites = whole && O_DSYNC !== undefined;
    fd = await job.ops.open(job.file, createFlags(durableWrites), PRIVATE_FILE_MODE);
    nameSynced = job.syncName();
    nameSynced.catch(() => undefined); // awaited below; a failure before then is not unhandled
    return fd;
  };
  let bytes = 0;
  let crc = 0;
  let kept: Buffer[] | undefined = job.keepUpTo > 0 ? [] : undefined;
  let batch: Buffer[] = [];
  let batchBytes = 0;
  const flush = async (last: boolean) => {
    const data = batch.length === 1 ? batch[0]! : Buffer.concat(batch);
    crc = crc32(data, crc);
    bytes += batchBytes;
    if (kept && bytes <= job.keepUpTo) kept.push(data);
    else kept = undefined;
    batch = [];
    batchBytes = 0;
    const target = fd ?? (await create(last));
    const tail = last ? job.trailer({ bytes, crc32: crc }) : undefined;
    // A durable write waits for the disk: never on the calling thread.
    await writeAll(target, tail ? Buffer.concat([data, tail]) : data, durableWrites ? pooled : job.ops);
  };
  try {
    for await (const chunk of job.source as AsyncIterable<Buffer>) {
      batch.push(chunk);
      batchBytes += chunk.length;
      if (batchBytes >= WRITE_BATCH) await flush(false);
    }
    await flush(true);
    const steps = await Promise.allSettled([durableWrites || syncFd(fd!), nameSynced]);
    const failed = steps.find((step) => step.status === 'rejected');
    if (failed) throw failed.reason;
  } catch (err) {
    if (fd !== undefined) {
      await closeQuietly(fd, inline);
      // Only a file this call created: an open that failed (EEXIST) names someone else's.
      await unlink(job.file).catch(() => undefined);
    }
    throw err;
  }
  // Durable already: a failed close cannot undo that, and the descriptor is gone either way.
  await closeQuietly(fd!, inline);
  const whole = kept && (kept.length === 1 ? kept[0]! : Buffer.concat(kept));
  return { bytes, crc32: crc, ...(whole ? { kept: whole } : {}) };
}
