// What a message's MAIL FROM and RCPT TO lines carry on the way out, from its stored envelope:
// DSN's RET and ENVID, and each recipient's NOTIFY and ORCPT (RFC 3461), and BODY=8BITMIME
// (RFC 6152). nodemailer puts each on the line only when the ESP's EHLO offers its extension.
import type { QueueEntry } from '../spool/entry.js';
import type { TransactionExtras } from './nodemailer-adapter.js';

/** The nodemailer envelope fields for MAIL FROM's parameters. */
export function mailParams(entry: QueueEntry): {
  dsn?: { ret?: string; envid?: string };
  use8BitMime?: true;
} {
  return { ...dsnFor(entry), ...(carries8Bit(entry) ? { use8BitMime: true } : {}) };
}

/**
 * Whether the message goes with BODY=8BITMIME: the client declared it, or the stored message
 * has a byte outside ASCII anyway (devices send UTF-8 or Latin-1 text undeclared). An ESP that
 * does not offer 8BITMIME gets the message as it is, without the parameter, as before.
 */
export function carries8Bit(entry: Pick<QueueEntry, 'bodyType' | 'eightBit'>): boolean {
  return entry.bodyType === '8bitmime' || entry.eightBit === true;
}

/** RET and ENVID to pass on (nodemailer puts them on MAIL only when the ESP offers DSN). */
function dsnFor(entry: QueueEntry): { dsn?: { ret?: string; envid?: string } } {
  const { ret, envid } = entry.dsn ?? {};
  if (!ret && !envid) return {};
  return { dsn: { ...(ret ? { ret } : {}), ...(envid ? { envid } : {}) } };
}

/**
 * Each recipient's NOTIFY and ORCPT, for its own RCPT TO line (nodemailer-adapter.ts; sent only
 * when the ESP offers DSN). Undefined when no recipient has either.
 */
export function recipientDsn(entry: QueueEntry, recipients: string[]): TransactionExtras['recipients'] {
  const list = recipients.map((address) => {
    const state = entry.recipients.find((r) => r.address === address);
    return {
      address,
      ...(state?.notify?.length ? { notify: state.notify.join(',') } : {}),
      ...(state?.orcpt ? { orcpt: state.orcpt } : {}),
    };
  });
  return list.some((r) => r.notify || r.orcpt) ? list : undefined;
}
