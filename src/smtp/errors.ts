// A refusal or failure with its SMTP reply: the basic code, the enhanced status code
// (RFC 3463) and words an admin can act on. smtp-server sends `responseCode` and the message
// text of an Error passed to a callback, so this is all the listener needs.
import { formatDuration } from '../config/units.js';
import type { RefusalReason } from '../events.js';

/** Bytes as the config file writes them: 41943040 → "40MB", 1000 → "1000 bytes". */
export function formatSize(bytes: number): string {
  for (const [unit, size] of [
    ['GB', 1024 ** 3],
    ['MB', 1024 ** 2],
    ['KB', 1024],
  ] as const) {
    if (bytes >= size && bytes % size === 0) return `${bytes / size}${unit}`;
  }
  return `${bytes} bytes`;
}

export class SmtpError extends Error {
  readonly responseCode: number;
  constructor(
    readonly code: number,
    readonly enhanced: string,
    readonly text: string,
    /** A short machine-readable reason (events.ts), used in logs and metrics labels. */
    readonly reason: RefusalReason = 'refused',
  ) {
    super(`${enhanced} ${text}`);
    this.name = 'SmtpError';
    this.responseCode = code;
  }

  get temporary(): boolean {
    return this.code >= 400 && this.code < 500;
  }
}

export const smtpErrors = {
  notAllowed: (ip: string) =>
    new SmtpError(
      550,
      '5.7.1',
      `Client ${ip} is not allowed to send through this relay: it is not in the allowlist and has not authenticated`,
      'not_allowed',
    ),
  tlsRequired: () =>
    new SmtpError(
      530,
      '5.7.0',
      'Must issue a STARTTLS command first (this port requires TLS)',
      'tls_required',
    ),
  insecureAuth: () =>
    new SmtpError(
      538,
      '5.7.11',
      'Encryption required for requested authentication mechanism: use STARTTLS first',
      'insecure_auth',
    ),
  authFailed: () => new SmtpError(535, '5.7.8', 'Authentication credentials invalid', 'auth_failed'),
  tooManyRecipients: (max: number, source: string) =>
    new SmtpError(
      452,
      '4.5.3',
      `Too many recipients: at most ${max} per message for source ${source}`,
      'recipients',
    ),
  messageTooBig: (max: number, source: string) =>
    new SmtpError(
      552,
      '5.3.4',
      `Message too big: the limit for source ${source} is ${formatSize(max)} (maxMessageSize)`,
      'size',
    ),
  diskFull: () =>
    new SmtpError(
      452,
      '4.3.1',
      'Insufficient system storage: the relay cannot queue mail now, try again later',
      'disk_full',
    ),
  spoolFailed: () =>
    new SmtpError(
      451,
      '4.3.0',
      'Temporary failure writing the message to the queue, try again later',
      'spool_error',
    ),
  shuttingDown: () => new SmtpError(421, '4.3.2', 'The relay is shutting down, try again later', 'shutdown'),
  badAddress: (address: string, why: string) =>
    new SmtpError(
      553,
      '5.1.3',
      // A hostile address is not echoed whole: an address is at most 254 characters anyway.
      `Address ${JSON.stringify(address.length > 300 ? `${address.slice(0, 300)}...` : address)} rejected: ${why}`,
      'bad_address',
    ),
  rateLimited: (what: 'message' | 'recipient', rate: string, source: string, retryInMs: number) =>
    new SmtpError(
      450,
      '4.7.1',
      `${what === 'message' ? 'Rate limit' : 'Recipient rate limit'} ${rate} exceeded for source ${source}, try again in ${Math.max(1, Math.ceil(retryInMs / 1000))} seconds`,
      what === 'message' ? 'rate_limit' : 'recipient_rate_limit',
    ),
  tooManyConnections: (max: number) =>
    new SmtpError(
      421,
      '4.7.0',
      `Too many connections: the relay serves at most ${max} at once (limits.maxConnections), try again in a moment`,
      'max_connections',
    ),
  tooManyConnectionsFromIp: (ip: string, max: number) =>
    new SmtpError(
      421,
      '4.7.0',
      `Too many connections from ${ip}: at most ${max} at once (limits.maxConnectionsPerIp), try again in a moment`,
      'max_connections_per_ip',
    ),
  authLockedOut: (
    ip: string,
    lockedForMs: number,
    failures: number,
    windowMs: number,
    code: 421 | 454 = 421,
  ) =>
    new SmtpError(
      code,
      '4.7.0',
      `Too many failed logins from ${ip} (${failures} within ${formatDuration(windowMs)}, limits.maxAuthFailures): ${code === 454 ? 'AUTH ' : ''}refused for ${formatDuration(lockedForMs)}, try again later`,
      'auth_lockout',
    ),
  userLockedOut: (lockedForMs: number, failures: number, windowMs: number) =>
    new SmtpError(
      454,
      '4.7.0',
      `Too many failed logins for this user (${failures} within ${formatDuration(windowMs)}, limits.maxAuthFailures): AUTH refused for ${formatDuration(lockedForMs)}, try again later`,
      'auth_lockout',
    ),
  recipientDomainNotAllowed: (domain: string, source: string) =>
    new SmtpError(
      550,
      '5.7.1',
      `Recipient domain ${domain || '(none)'} not allowed for source ${source}`,
      'recipient_domain',
    ),
  noPostmaster: () =>
    new SmtpError(
      550,
      '5.1.1',
      'Recipient postmaster: this relay has no postmaster mailbox (set bounces.to)',
      'no_postmaster',
    ),
  authBeforeStarttls: () =>
    new SmtpError(530, '5.7.0', 'Must issue a STARTTLS command first', 'auth_before_starttls'),
  tooManyRefusedCommands: (max: number) =>
    new SmtpError(
      421,
      '4.7.0',
      `Too many refused commands (${max}, limits.maxRefusedCommands): closing the connection`,
      'refused_commands',
    ),
  timedOut: (what: string) =>
    new SmtpError(421, '4.4.2', `Timeout: ${what}, closing the connection`, 'timeout'),
  tooManyUntrustedConnections: (max: number) =>
    new SmtpError(
      421,
      '4.7.0',
      `Too many connections from clients outside the allowlist: at most ${max} at once (limits.maxUntrustedConnections), try again in a moment`,
      'max_untrusted_connections',
    ),
  headerSectionTooLarge: (what: string) =>
    new SmtpError(552, '5.3.4', `Header section too large: ${what}`, 'header_too_large'),
  headerLineTooLong: (max: number) =>
    new SmtpError(
      550,
      '5.6.0',
      `Header line too long: a header line may hold at most ${max} characters (RFC 5322 section 2.1.1); fold the header`,
      'header_line_too_long',
    ),
  senderNotAllowed: (sender: string, source: string) =>
    new SmtpError(
      550,
      '5.7.1',
      `Sender ${sender ? `<${sender}>` : '<> (null sender)'} not allowed for source ${source} (see its allowedSenders)`,
      'sender_not_allowed',
    ),
};
