// Durable file-system primitives: a file is only "there" once its bytes and the directory
// entry that names it have both reached the disk (chasquid's safeio, Postfix's fsync-on-queue).
import { open, rename, unlink } from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import type { Readable } from 'node:stream';

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
 * Streams into a new file and fsyncs it; the file is removed if anything fails. Returns bytes written.
 * `alongside(bytes)`, if given, runs while the file's fsync is in flight (the spool writes the
 * envelope then, so the two fsyncs overlap instead of queueing); its failure fails the call.
 */
export async function writeStreamDurably(
  file: string,
  source: Readable,
  alongside?: (bytes: number) => Promise<void>,
): Promise<number> {
  const handle = await open(file, 'wx', 0o640);
  let bytes = 0;
  try {
    // Small chunks (a client writing line by line) are gathered into larger writes.
    let batch: Buffer[] = [];
    let batchBytes = 0;
    for await (const chunk of source as AsyncIterable<Buffer>) {
      batch.push(chunk);
      batchBytes += chunk.length;
      if (batchBytes >= 64 * 1024) {
        await writeAll(handle, batch.length === 1 ? chunk : Buffer.concat(batch));
        bytes += batchBytes;
        batch = [];
        batchBytes = 0;
      }
    }
    if (batchBytes) await writeAll(handle, Buffer.concat(batch));
    bytes += batchBytes;
    const [synced, extra] = await Promise.allSettled([handle.sync(), alongside?.(bytes)]);
    if (synced.status === 'rejected') throw synced.reason;
    if (extra.status === 'rejected') throw extra.reason;
  } catch (err) {
    await closeQuietly(handle);
    await unlink(file).catch(() => undefined);
    throw err;
  }
  await handle.close();
  return bytes;
}

async function writeAll(handle: FileHandle, data: Buffer): Promise<void> {
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

async function closeQuietly(handle: FileHandle): Promise<void> {
  await handle.close().catch(() => undefined);
}
