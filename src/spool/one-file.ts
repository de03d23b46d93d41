// A new message is one file, <id>.msg: its body, then its envelope as JSON, then a fixed-size
// footer that says how long the envelope is. One file means one create, one fsync, one close
// and, once delivered, one unlink: on the path a printer's message takes (accepted, delivered
// at the first attempt, removed) that is half the file-system work of a body and a .json, and
// on a virtual machine each of those trips through the thread pool costs more than the work.
//
// The first change of its state (a retry, a hold, a failure) splits it into the long-lived
// layout, <id>.json beside <id>.eml (spool.ts), so that a retry rewrites only a small file:
// the .json is written durably first, then the .msg is cut back to the body, fsynced and
// renamed to .eml. A crash between the two leaves a .json beside a .msg, which init finishes.
//
// The footer is written last, but a crash before the fsync may still leave it on disk with a
// hole in the body (pages reach the disk in any order): the envelope carries the body's CRC-32,
// checked before the first attempt of a message read back after a restart. A file whose footer
// or envelope does not parse was never acknowledged (the 250 follows the fsync) and is swept.
//
// The body comes from a client, and a crash may cut a file short just after a part of it: a
// body that ended in an envelope and footer of its own must never be taken for ours (its own
// recipients, past the source's policy). It cannot: the footer has bare LFs, which no stored
// body has (every line end is CRLF: rewrite/line-endings.ts), and the envelope must name the
// file's own queue id, which has 40 random bits and is told to the client only in the 250.
import fs from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import type { QueueEntry } from './entry.js';

/** "\nSMARTHOST-ENVELOPE-1 " + the envelope's length in 10 digits + "\n". */
const FOOTER_TAG = '\nSMARTHOST-ENVELOPE-1 ';
const LENGTH_DIGITS = 10;
export const FOOTER_LENGTH = FOOTER_TAG.length + LENGTH_DIGITS + 1;
/** Larger envelopes are not ours (a recipient list is capped far below this). */
const MAX_ENVELOPE = 16 * 1024 * 1024;

/** What follows the body in a .msg file: the envelope, then the footer. */
export function encodeTrailer(entry: QueueEntry): Buffer {
  const { oneFile: _inMemoryOnly, ...stored } = entry;
  const json = Buffer.from(JSON.stringify(stored));
  const footer = `${FOOTER_TAG}${String(json.length).padStart(LENGTH_DIGITS, '0')}\n`;
  return Buffer.concat([json, Buffer.from(footer, 'latin1')]);
}

/**
 * The envelope of a .msg file, marked `oneFile`; undefined when the file is missing, or is not
 * a whole one (a reception a crash cut short: no footer, a torn envelope, sizes that disagree).
 */
export async function readTrailer(file: string): Promise<QueueEntry | undefined> {
  const id = path.basename(file, '.msg');
  let handle: fs.promises.FileHandle;
  try {
    handle = await fs.promises.open(file, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  try {
    const { size } = await handle.stat();
    if (size < FOOTER_LENGTH) return undefined;
    const footer = Buffer.alloc(FOOTER_LENGTH);
    await handle.read(footer, 0, FOOTER_LENGTH, size - FOOTER_LENGTH);
    const text = footer.toString('latin1');
    if (!text.startsWith(FOOTER_TAG) || !text.endsWith('\n')) return undefined;
    const digits = text.slice(FOOTER_TAG.length, -1);
    if (!/^\d+$/.test(digits)) return undefined;
    const length = Number(digits);
    const bodySize = size - FOOTER_LENGTH - length;
    if (length > MAX_ENVELOPE || bodySize < 0) return undefined;
    const json = Buffer.alloc(length);
    await handle.read(json, 0, length, bodySize);
    const entry = parseEnvelope(json.toString('utf8'));
    if (!entry || entry.id !== id || entry.size !== bodySize || typeof entry.bodyCrc32 !== 'number') {
      return undefined;
    }
    return { ...entry, oneFile: true };
  } finally {
    await handle.close();
  }
}

function parseEnvelope(text: string): QueueEntry | undefined {
  try {
    const value = JSON.parse(text) as QueueEntry | null;
    return value && typeof value === 'object' && typeof value.id === 'string' ? value : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Cuts a .msg file back to its body, makes that durable, and renames it to the .eml name: the
 * second half of a split (its .json is already written). Safe to repeat after a crash.
 */
export async function trimToBody(msgFile: string, emlFile: string, size: number): Promise<void> {
  const handle = await fs.promises.open(msgFile, 'r+');
  try {
    await handle.truncate(size);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.promises.rename(msgFile, emlFile);
}

/** A stored body as a stream: a whole .eml, or the first `length` bytes of a .msg. */
export function readBody(body: { path: string; length?: number }, highWaterMark?: number): Readable {
  if (body.length === 0) return Readable.from([]);
  const range = body.length === undefined ? {} : { start: 0, end: body.length - 1 }; // end is inclusive
  return fs.createReadStream(body.path, { ...range, ...(highWaterMark ? { highWaterMark } : {}) });
}
