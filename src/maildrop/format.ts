// The maildrop file: what `smarthost sendmail` leaves in <spool>/maildrop/ for the relay (as
// Postfix's postdrop does for its pickup). One header line, then the message as it was given:
//
//   SMARTHOST-MAILDROP 1 000000001234 {"from":"cron@corp.example","recipients":["a@b.example"]}\n
//   <1234 bytes of message>
//
// The 12 digits are the message's length, written last (the writer does not know it before
// the end of stdin): a file whose length does not match was cut short or added to, and is not
// mail. The relay treats every file here as hostile input from any local user who can write the
// folder (see pickup.ts); this module only checks the form.
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { newQueueId } from '../spool/entry.js';

export const MAGIC = 'SMARTHOST-MAILDROP 1 ';
/** Digits of the length field. */
export const SIZE_DIGITS = 12;
/** The longest header line read (recipients included). */
export const MAX_HEADER_LINE = 512 * 1024;

/** A finished maildrop file's name: a queue-id-like time prefix, then random hex. */
export const DROP_NAME = /^[0-9A-Z]{9}[0-9A-F]{10}-[0-9a-f]{16}\.msg$/;
/** A file being written: never picked up (the writer renames it when complete). */
export const TEMP_PREFIX = '.tmp-';

export function newDropName(): string {
  return `${newQueueId()}-${randomBytes(8).toString('hex')}.msg`;
}

export function newTempName(): string {
  return `${TEMP_PREFIX}${randomBytes(12).toString('hex')}`;
}

const address = z.string().max(998);
const envelopeSchema = z.strictObject({
  /** The envelope sender; '' is the null sender. */
  from: address,
  recipients: z.array(address.min(1)).min(1).max(10_000),
  /** The login name of who ran sendmail, as it said (the relay trusts the file's owner uid). */
  user: z.string().max(256).optional(),
});

export type DropEnvelope = z.output<typeof envelopeSchema>;

/** The header line, with the length field zeroed (filled in by `sizeField` at the end). */
export function headerLine(envelope: DropEnvelope): Buffer {
  return Buffer.from(`${MAGIC}${'0'.repeat(SIZE_DIGITS)} ${JSON.stringify(envelope)}\n`);
}

export function sizeField(size: number): Buffer {
  return Buffer.from(String(size).padStart(SIZE_DIGITS, '0'));
}

export class DropFormatError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DropFormatError';
  }
}

/** A header line's content (without its \n): the envelope and the message's declared length. */
export function parseHeaderLine(line: string): { envelope: DropEnvelope; size: number } {
  if (!line.startsWith(MAGIC))
    throw new DropFormatError('not a maildrop file (no SMARTHOST-MAILDROP 1 line)');
  const digits = line.slice(MAGIC.length, MAGIC.length + SIZE_DIGITS);
  if (!/^\d{12}$/.test(digits) || line[MAGIC.length + SIZE_DIGITS] !== ' ')
    throw new DropFormatError('the length field is not 12 digits');
  let json: unknown;
  try {
    json = JSON.parse(line.slice(MAGIC.length + SIZE_DIGITS + 1));
  } catch {
    throw new DropFormatError('the envelope is not JSON');
  }
  const parsed = envelopeSchema.safeParse(json);
  if (!parsed.success)
    throw new DropFormatError(`the envelope is not valid: ${parsed.error.issues[0]?.message}`);
  return { envelope: parsed.data, size: Number(digits) };
}
