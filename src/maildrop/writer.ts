// Writing a maildrop file durably (the sendmail side): a temp name the relay never picks up,
// the message streamed in, its length filled in, fsync, rename to the final name, fsync the
// folder. Only then may sendmail exit 0: a crash at any point before leaves at most a temp
// file (swept by the relay), never a half-written message under a name it would take.
import fs from 'node:fs';
import { rename, unlink } from 'node:fs/promises';
import path from 'node:path';
import { closeQuietly, fsyncDir, pooled, syncFd, writeAll } from '../spool/fsync.js';
import { headerLine, MAGIC, newDropName, newTempName, sizeField, type DropEnvelope } from './format.js';

/**
 * Readable by the relay through the folder's group (the folder is setgid: a file gets its
 * group, whoever writes it), by no one else. The folder is not listable by its writers, and
 * the names are random, so one local user cannot find another's message.
 */
export const DROP_FILE_MODE = 0o640;

export interface WrittenDrop {
  name: string;
  file: string;
  /** The message's length (without the header line). */
  size: number;
}

/**
 * Writes `message` with `envelope` into `dir`. `check(size)` runs once the whole message is
 * written and before it is committed: throwing there (a message too big) leaves nothing.
 */
export async function writeDrop(
  dir: string,
  envelope: DropEnvelope,
  message: AsyncIterable<Buffer>,
  check?: (size: number) => void,
): Promise<WrittenDrop> {
  const tmp = path.join(dir, newTempName());
  // wx: never through a name someone else planted (a symlink included).
  const fd = await pooled.open(tmp, 'wx', DROP_FILE_MODE);
  let size = 0;
  try {
    // The umask may have taken the group's read bit away: the relay needs it.
    fs.fchmodSync(fd, DROP_FILE_MODE);
    await writeAll(fd, headerLine(envelope));
    for await (const chunk of message) {
      size += chunk.length;
      await writeAll(fd, chunk);
    }
    check?.(size);
    fs.writeSync(fd, sizeField(size), 0, undefined, MAGIC.length);
    await syncFd(fd);
  } catch (err) {
    await closeQuietly(fd);
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await pooled.close(fd);
  const name = newDropName();
  const file = path.join(dir, name);
  try {
    await rename(tmp, file);
  } catch (err) {
    await unlink(tmp).catch(() => undefined);
    throw err;
  }
  await fsyncDir(dir);
  return { name, file, size };
}
