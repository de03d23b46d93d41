// Durable file-system primitives: a file is only "there" once its bytes and the directory
// entry that names it have both reached the disk (chasquid's safeio, Postfix's fsync-on-queue).
import { createReadStream } from 'node:fs';
import { open, rename, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';
import { crc32 } from 'node:zlib';

export async function fsyncDir(dir: string): Promise<void> {
  return fsyncFile(dir);
}

export async function fsyncFile(file: string): Promise<void> {
  const handle = await open(file, 'r');
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

/**
 * Writes everything `source` yields into an open file (not fsynced: the caller decides when),
 * and returns the byte count and the CRC-32 of what was written. With `keepUpTo`, a body no
 * larger than that is also returned whole, as written (`kept`).
 */
export async function streamInto(
  handle: FileHandle,
  source: Readable,
  keepUpTo = 0,
): Promise<{ bytes: number; crc32: number; kept?: Buffer }> {
  let bytes = 0;
  let crc = 0;
  let kept: Buffer[] | undefined = keepUpTo > 0 ? [] : undefined;
  // Small chunks (a client writing line by line) are gathered into larger writes.
  let batch: Buffer[] = [];
  let batchBytes = 0;
  const flush = async () => {
    const data = batch.length === 1 ? batch[0]! : Buffer.concat(batch);
    crc = crc32(data, crc);
    bytes += batchBytes;
    if (kept && bytes <= keepUpTo) kept.push(data);
    else kept = undefined;
    batch = [];
    batchBytes = 0;
    await writeAll(handle, data);
  };
  for await (const chunk of source as AsyncIterable<Buffer>) {
    batch.push(chunk);
    batchBytes += chunk.length;
    if (batchBytes >= 64 * 1024) await flush();
  }
  if (batchBytes) await flush();
  const whole = kept && (kept.length === 1 ? kept[0]! : Buffer.concat(kept));
  return { bytes, crc32: crc, ...(whole ? { kept: whole } : {}) };
}

/** The CRC-32 of a whole file, read in a stream. */
export async function fileCrc32(file: string): Promise<number> {
  let crc = 0;
  for await (const chunk of createReadStream(file) as AsyncIterable<Buffer>) crc = crc32(chunk, crc);
  return crc;
}

export async function writeAll(handle: FileHandle, data: Buffer): Promise<void> {
  let offset = 0;
  while (offset < data.length) {
    const { bytesWritten } = await handle.write(data, offset, data.length - offset);
    offset += bytesWritten;
  }
}

/** Writes a whole small file and fsyncs it (not the directory: the caller renames it into place). */
export async function writeFileDurably(file: string, data: string | Buffer): Promise<void> {
  const handle = await open(file, 'w', 0o640);
  try {
    await handle.writeFile(data);
    await handle.sync();
  } catch (err) {
    await closeQuietly(handle);
    await unlink(file).catch(() => undefined);
    throw err;
  }
  await handle.close();
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

export async function closeQuietly(handle: FileHandle): Promise<void> {
  await handle.close().catch(() => undefined);
}
