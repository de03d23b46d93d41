// SMTPUTF8 (RFC 6531) on the way out. A message that came with SMTPUTF8 is passed on with it to
// an ESP that offers it. To one that does not, it may go only if nothing in it needs SMTPUTF8
// (as Postfix does: a client may ask for it for an all-ASCII message): otherwise it would be
// sent raw, UTF-8 where the ESP expects ASCII, so it fails for good with a 5.6.7 bounce saying
// why (nodemailer-adapter.ts carries this out on the connection, after its EHLO).
//
// What needs it: a non-ASCII local part in the envelope (a non-ASCII domain goes out in
// punycode, which any ESP takes), or a non-ASCII byte in the header section.
import { readHeaderBlock } from '../bounce/dsn.js';
import type { QueueEntry } from '../spool/entry.js';
import type { MessageBody } from './courier.js';
import type { TransactionExtras } from './nodemailer-adapter.js';

/** Whether an address has a non-ASCII local part (the domain can be sent in punycode). */
export function hasNonAsciiLocalPart(address: string): boolean {
  const at = address.lastIndexOf('@');
  const local = at < 0 ? address : address.slice(0, at);
  for (let i = 0; i < local.length; i++) if (local.charCodeAt(i) > 0x7f) return true;
  return false;
}

/** Whether a header section has a byte outside ASCII. */
export function hasNonAsciiByte(data: Buffer): boolean {
  for (const byte of data) if (byte > 0x7f) return true;
  return false;
}

/**
 * What SMTPUTF8 means for this transaction (pure): nothing when the client did not ask for it;
 * else required (with the reason) or only requested. `headers`: the message's header section,
 * looked at only when the addresses do not decide it.
 */
export function smtpUtf8Need(
  entry: Pick<QueueEntry, 'smtpUtf8' | 'from'>,
  recipients: string[],
  headers: () => Buffer | undefined,
): TransactionExtras['smtpUtf8'] {
  if (!entry.smtpUtf8) return undefined;
  if ([entry.from, ...recipients].some(hasNonAsciiLocalPart)) {
    return { need: 'required', reason: 'the message has non-ASCII addresses' };
  }
  const head = headers();
  if (head && hasNonAsciiByte(head)) {
    return { need: 'required', reason: 'the message has non-ASCII header fields' };
  }
  return { need: 'requested' };
}

/** smtpUtf8Need, with the header section read from the body in memory or from its file. */
export async function smtpUtf8For(
  entry: QueueEntry,
  recipients: string[],
  body: MessageBody,
): Promise<TransactionExtras['smtpUtf8']> {
  if (!entry.smtpUtf8) return undefined;
  let head: Buffer | undefined;
  if (body.data) {
    const end = body.data.indexOf('\r\n\r\n');
    head = end < 0 ? body.data : body.data.subarray(0, end);
  } else if (![entry.from, ...recipients].some(hasNonAsciiLocalPart)) {
    // Unreadable: the send that follows fails on it the same way, and says so.
    head = await readHeaderBlock(body.path, body.length).catch(() => undefined);
  }
  return smtpUtf8Need(entry, recipients, () => head);
}
