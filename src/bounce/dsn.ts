// RFC 3464 delivery status notifications. The report carries the original's headers only
// (text/rfc822-headers), never its body: a bounced 30 MB scan does not become a 30 MB bounce.
import { randomBytes } from 'node:crypto';
import { open } from 'node:fs/promises';
import { rfc5322Date } from '../rewrite/hygiene.js';

export interface FailedRecipient {
  address: string;
  /** The reply that sealed its fate, e.g. "550 5.1.1 User unknown". */
  reply: string;
  /** Set when it failed because it waited too long, not because it was refused. */
  expired?: boolean;
  /** The client's ORCPT for it (RFC 3461), echoed as Original-Recipient. */
  orcpt?: string;
}

export interface DsnInput {
  hostname: string;
  queueId: string;
  to: string;
  arrivalDate: Date;
  failed: FailedRecipient[];
  originalHeaders: Buffer;
  /** The client's ENVID (RFC 3461), echoed as Original-Envelope-Id. */
  envid?: string;
  now?: Date;
}

/** The enhanced status of a reply ("550 5.1.1 ..." → "5.1.1"), else a generic one. */
export function statusOf(recipient: FailedRecipient): string {
  if (recipient.expired) return '4.4.7';
  const match = /^\s*\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/.exec(recipient.reply);
  if (match?.[1]?.startsWith('5')) return match[1];
  return '5.0.0';
}

export function buildDsn(input: DsnInput): Buffer {
  const now = input.now ?? new Date();
  const boundary = `=_smarthost_${randomBytes(12).toString('hex')}`;
  const oneLine = (s: string) => s.replace(/[\r\n]+/g, ' ').trim();
  const lines = input.failed.map(
    (r) =>
      `<${oneLine(r.address)}>: ${r.expired ? `could not be delivered for too long; last reply: ${oneLine(r.reply)}` : oneLine(r.reply)}`,
  );
  const text = [
    `This is the mail relay at ${input.hostname}.`,
    '',
    'Your message could not be delivered to one or more recipients.',
    'It has been kept by the relay; the reason for each recipient is below.',
    '',
    ...lines,
    '',
  ].join('\r\n');
  const perRecipient = input.failed
    .map((r) =>
      [
        ...(r.orcpt ? [`Original-Recipient: ${oneLine(r.orcpt)}`] : []),
        `Final-Recipient: rfc822; ${oneLine(r.address)}`,
        'Action: failed',
        `Status: ${statusOf(r)}`,
        `Diagnostic-Code: smtp; ${oneLine(r.reply)}`,
        `Last-Attempt-Date: ${rfc5322Date(now)}`,
      ].join('\r\n'),
    )
    .join('\r\n\r\n');
  const message = [
    `From: Mail Delivery System <MAILER-DAEMON@${input.hostname}>`,
    `To: <${oneLine(input.to)}>`,
    'Subject: Undelivered Mail Returned to Sender',
    `Date: ${rfc5322Date(now)}`,
    `Message-ID: <${input.queueId}.dsn.${randomBytes(4).toString('hex')}@${input.hostname}>`,
    'Auto-Submitted: auto-replied',
    'MIME-Version: 1.0',
    `Content-Type: multipart/report; report-type=delivery-status; boundary="${boundary}"`,
    '',
    'This is a MIME-encapsulated delivery status notification.',
    '',
    `--${boundary}`,
    'Content-Type: text/plain; charset=utf-8',
    'Content-Transfer-Encoding: 8bit',
    '',
    text,
    `--${boundary}`,
    'Content-Type: message/delivery-status',
    '',
    ...(input.envid ? [`Original-Envelope-Id: ${oneLine(input.envid)}`] : []),
    `Reporting-MTA: dns; ${input.hostname}`,
    `X-Smarthost-Queue-ID: ${input.queueId}`,
    `Arrival-Date: ${rfc5322Date(input.arrivalDate)}`,
    '',
    perRecipient,
    '',
    `--${boundary}`,
    'Content-Type: text/rfc822-headers',
    '',
    input.originalHeaders.toString('binary').replace(/(\r\n)+$/, ''),
    '',
    `--${boundary}--`,
    '',
  ].join('\r\n');
  return Buffer.from(message, 'binary');
}

/**
 * The header block of a stored message (at most 64 KB), without reading the body. `length`: only
 * the file's first `length` bytes are the message (a one-file message: spool/one-file.ts).
 */
export async function readHeaderBlock(file: string, length?: number): Promise<Buffer> {
  const limit = Math.min(64 * 1024, length ?? Infinity);
  const handle = await open(file, 'r');
  try {
    const buf = Buffer.alloc(limit);
    const { bytesRead } = await handle.read(buf, 0, limit, 0);
    const data = buf.subarray(0, bytesRead);
    const end = data.indexOf('\r\n\r\n');
    return end === -1 ? data : data.subarray(0, end + 2);
  } finally {
    await handle.close();
  }
}
