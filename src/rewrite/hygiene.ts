// The headers devices forget, and the trace line every relay adds (RFC 5321 §4.4).
import { randomBytes } from 'node:crypto';
import type { Headers } from 'mailsplit';

/** RFC 5322 date-time: "Sun, 29 Nov 2026 03:27:00 +0000". */
export function rfc5322Date(date = new Date()): string {
  return date.toUTCString().replace(/GMT$/, '+0000');
}

export function addMissingHeaders(
  headers: Headers,
  hostname: string,
  queueId: string,
  now = new Date(),
): void {
  if (!headers.hasHeader('date')) headers.add('Date', rfc5322Date(now), Infinity);
  if (!headers.hasHeader('message-id')) {
    headers.add('Message-ID', `<${queueId}.${randomBytes(6).toString('hex')}@${hostname}>`, Infinity);
  }
}

export interface TraceInfo {
  helo?: string;
  clientAddress: string;
  hostname: string;
  queueId: string;
  tls: boolean;
  authenticated: boolean;
  /** Named only when there is exactly one, so a Bcc list is never disclosed. */
  recipients: string[];
  date?: Date;
  /** Submitted on this host (`smarthost sendmail`) by this user id: no client to name. */
  localUid?: number;
}

/** A Received header: from HELO ([ip]) by host (smarthost) with ESMTPSA id ID for <rcpt>; date. */
export function receivedHeader(info: TraceInfo): string {
  if (info.localUid !== undefined) {
    // As Postfix's pickup writes it: "by host (Postfix, from userid 1000)".
    return (
      `Received: by ${sanitize(info.hostname)} (smarthost, from userid ${info.localUid}) id ${info.queueId};` +
      `\r\n\t${rfc5322Date(info.date)}`
    );
  }
  const helo = sanitize(info.helo ?? 'unknown') || 'unknown';
  const protocol = `ESMTP${info.tls ? 'S' : ''}${info.authenticated ? 'A' : ''}`;
  const ip = info.clientAddress.includes(':') ? `IPv6:${info.clientAddress}` : info.clientAddress;
  // The one recipient is named only when it can be written as is: sanitising an address
  // (an SMTPUTF8 one, say) would name a different mailbox.
  const only = info.recipients.length === 1 ? (info.recipients[0] ?? '') : '';
  const single = only && sanitize(only) === only ? `\r\n\tfor <${only}>` : '';
  return (
    `Received: from ${helo} ([${ip}])\r\n\tby ${sanitize(info.hostname)} (smarthost) with ${protocol} id ${info.queueId}` +
    `${single};\r\n\t${rfc5322Date(info.date)}`
  );
}

/** Keeps a value from breaking out of its place in a header: no controls, parentheses or brackets. */
function sanitize(value: string): string {
  return value.replace(/[^\x21-\x7e]|[()<>;\\]/g, '').slice(0, 200);
}
