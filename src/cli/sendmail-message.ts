// The message sendmail reads on stdin: its header section held (bounded), its body streamed.
// As Postfix's sendmail and cleanup do: without -i a line of a single "." ends the message;
// the header section ends at the first blank line or at the first line that is not a header
// (a blank line is put in); -t takes recipients from To, Cc and Bcc; Bcc lines never leave;
// a missing From is written from the envelope sender and -F.
import libmime from 'libmime';
import addressparser from 'nodemailer/lib/addressparser/index.js';
import { EX, SendmailError } from './sendmail-args.js';

/** The longest header section read (the relay reads at most this much too). */
export const MAX_HEADER_SECTION = 1024 * 1024;

/** One header field: its name and the raw lines (folded lines included). */
export interface HeaderField {
  name: string;
  raw: string;
}

export interface ReadMessage {
  fields: HeaderField[];
  /** The rest of stdin after the header section (from the blank line on). */
  body: AsyncIterable<Buffer>;
  /** Whether anything at all came on stdin. */
  empty: boolean;
}

const FIELD = /^([!-9;-~]+)[ \t]*:/;

/** Stops at a line of a single "." (unless `ignoreDots`), as sendmail without -i does. */
export async function* untilDot(input: AsyncIterable<Buffer>, ignoreDots: boolean): AsyncGenerator<Buffer> {
  if (ignoreDots) {
    yield* input;
    return;
  }
  let carry: Buffer = Buffer.alloc(0);
  for await (const chunk of input) {
    const data = carry.length ? Buffer.concat([carry, chunk]) : chunk;
    let start = 0;
    let newline: number;
    while ((newline = data.indexOf(0x0a, start)) >= 0) {
      const line = data.subarray(start, newline).toString('latin1');
      if (line === '.' || line === '.\r') {
        if (start) yield data.subarray(0, start);
        return;
      }
      start = newline + 1;
    }
    // The part after the last newline may be the start of a "." line: kept for the next chunk.
    if (start) yield data.subarray(0, start);
    carry = data.subarray(start);
  }
  if (carry.length && carry.toString('latin1') !== '.') yield carry;
}

/** Splits the header section off `input`; the body streams on from where it ended. */
export async function readMessage(input: AsyncIterable<Buffer>): Promise<ReadMessage> {
  const iterator = input[Symbol.asyncIterator]();
  let held: Buffer = Buffer.alloc(0);
  let empty = true;
  for (;;) {
    const end = headerEnd(held);
    if (end !== undefined) {
      const rest = held.subarray(end.bodyStart);
      return {
        fields: parseFields(held.subarray(0, end.headerEnd)),
        body: continueWith(rest, end.insertBlank, iterator),
        empty: false,
      };
    }
    if (held.length > MAX_HEADER_SECTION)
      throw new SendmailError(
        `the message's header section is over ${MAX_HEADER_SECTION / 1024} KB`,
        EX.DATAERR,
      );
    const next = await iterator.next();
    if (next.done) break;
    if (next.value.length) empty = false;
    held = Buffer.concat([held, next.value]);
  }
  // The input ended inside the header section: all of it is headers (no body).
  const fields = parseFields(held);
  return { fields, body: (async function* () {})(), empty: empty && held.length === 0 };
}

/**
 * Where the header section ends in `data`, once that is known: at a blank line, or before the
 * first line that is neither a field nor a continuation (then a blank line is put in).
 */
function headerEnd(data: Buffer): { headerEnd: number; bodyStart: number; insertBlank: boolean } | undefined {
  let start = 0;
  let newline: number;
  while ((newline = data.indexOf(0x0a, start)) >= 0) {
    const line = data.subarray(start, newline).toString('latin1').replace(/\r$/, '');
    if (line === '') return { headerEnd: start, bodyStart: start, insertBlank: false };
    const continuation = start > 0 && /^[ \t]/.test(line);
    if (!continuation && !FIELD.test(line)) return { headerEnd: start, bodyStart: start, insertBlank: true };
    start = newline + 1;
  }
  return undefined;
}

async function* continueWith(
  first: Buffer,
  insertBlank: boolean,
  iterator: AsyncIterator<Buffer>,
): AsyncGenerator<Buffer> {
  if (insertBlank) yield Buffer.from('\n');
  if (first.length) yield first;
  for (;;) {
    const next = await iterator.next();
    if (next.done) return;
    yield next.value;
  }
}

function parseFields(section: Buffer): HeaderField[] {
  const fields: HeaderField[] = [];
  const text = section.toString('latin1');
  for (const line of text.split(/(?<=\n)/)) {
    if (!line) continue;
    const last = fields[fields.length - 1];
    if (/^[ \t]/.test(line) && last) last.raw += line;
    else fields.push({ name: (FIELD.exec(line)?.[1] ?? '').toLowerCase(), raw: line });
  }
  return fields;
}

/** The addresses of the To, Cc and Bcc fields (-t). */
export function headerRecipients(fields: HeaderField[]): string[] {
  const found: string[] = [];
  for (const field of fields) {
    if (!['to', 'cc', 'bcc'].includes(field.name)) continue;
    const value = Buffer.from(field.raw.slice(field.raw.indexOf(':') + 1), 'latin1')
      .toString('utf8')
      .replace(/\r?\n(?=[ \t])/g, '');
    for (const mailbox of addressparser(value, { flatten: true })) {
      const address = (mailbox.address ?? '').trim();
      if (address) found.push(address);
    }
  }
  return found;
}

/** The header section that goes in the maildrop: Bcc removed, a From put in when missing. */
export function outgoingHeader(fields: HeaderField[], from: string, fullName?: string): Buffer {
  const kept = fields.filter((f) => f.name !== 'bcc');
  const lines = kept.map((f) => (f.raw.endsWith('\n') ? f.raw : `${f.raw}\n`));
  if (!fields.some((f) => f.name === 'from') && from) lines.unshift(`From: ${mailbox(from, fullName)}\n`);
  return Buffer.from(lines.join(''), 'latin1');
}

/** "Full Name <a@b>" with the name quoted or encoded as it needs; the address alone without one. */
function mailbox(address: string, name?: string): string {
  // Control characters (a newline) in -F would start a header of their own: not kept.
  // eslint-disable-next-line no-control-regex
  const clean = (name ?? '').replace(/[\x00-\x1f\x7f]/g, ' ').trim();
  if (!clean) return address;
  const phrase = /^[\x20-\x7e]*$/.test(clean)
    ? `"${clean.replace(/(["\\])/g, '\\$1')}"`
    : libmime.encodeWord(clean, 'Q', 52);
  // Header bytes are written as latin1 here: an encoded word is ASCII, so nothing is lost.
  return `${phrase} <${address}>`;
}
