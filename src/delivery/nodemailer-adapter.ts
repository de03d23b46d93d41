// Everything the relay knows about nodemailer beyond its documented options lives here, so that
// an upgrade that changes it breaks one file, and test/unit/nodemailer-adapter.test.ts says so:
//  - the shape of its errors (`code`, `command`, `responseCode`, `response`), turned into the
//    facts the delivery decision needs (classify.ts);
//  - `rejectedErrors`, the per-recipient refusals on a result or an error (not in its types);
//  - `_supportedExtensions` and `_maxAllowedSize` of a connection: the ESP's SIZE (private);
//  - `getSocket`, the hook through which the caller supplies the connection (TCP_NODELAY).
import net from 'node:net';
import type SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import type { FailureFacts, SmtpStep } from './classify.js';
import { enhancedCodeOf } from './classify.js';

/** An error as nodemailer's SMTP client reports it. */
export interface SmtpFailure {
  code?: string;
  responseCode?: number;
  response?: string;
  command?: string;
  message: string;
}

/** One recipient refused at RCPT. */
export type RejectedError = SmtpFailure & { recipient: string };

/** Error codes nodemailer gives a connection that closed, reset or timed out without a reply. */
const LOST = new Set(['ECONNECTION', 'ESOCKET', 'ETIMEDOUT']);

/** The step of the conversation a nodemailer error is about. */
export function stepOf(failure: SmtpFailure): SmtpStep {
  const command = (failure.command ?? '').toUpperCase();
  if (failure.code === 'EAUTH' || failure.code === 'ENOAUTH' || failure.code === 'NoAuth') return 'auth';
  if (command.startsWith('AUTH')) return 'auth';
  if (command === 'CONN') {
    if (failure.code === 'ETLS') return 'starttls';
    return failure.responseCode === undefined ? 'connect' : 'greeting';
  }
  if (command === 'EHLO' || command === 'HELO' || command === 'LHLO') return 'ehlo';
  if (command === 'STARTTLS') return 'starttls';
  if (command === 'MAIL FROM') return 'mail';
  if (command === 'RCPT TO') return 'rcpt';
  if (command === 'DATA') return 'data';
  // RSET between two messages of a pooled connection: the connection's state, not a message's.
  if (command === 'RSET') return 'connect';
  return 'local'; // 'API': nodemailer's own checks, or reading the body failed (ESTREAM)
}

/** The facts of a nodemailer error, for decide() (classify.ts). */
export function factsOf(failure: SmtpFailure): FailureFacts {
  const code = typeof failure.responseCode === 'number' ? failure.responseCode : undefined;
  return {
    step: stepOf(failure),
    code,
    enhanced: enhancedCodeOf(failure.response),
    text: failure.response ?? failure.message,
    connectionLost: code === undefined && LOST.has(failure.code ?? ''),
  };
}

/** The failure in words, for logs and the message's state: the reply, or the error. */
export function describeFailure(failure: SmtpFailure): string {
  // A failed login says why in the message (e.g. the OAuth2 token endpoint's error), the reply after it.
  const raw = failure.code === 'EAUTH' ? failure.message : (failure.response ?? failure.message);
  const text = raw.replace(/\s+/g, ' ').trim();
  if (failure.code === 'EAUTH') return text;
  if (failure.responseCode !== undefined && !text.startsWith(String(failure.responseCode))) {
    return `${failure.responseCode} ${text}`;
  }
  return failure.code && !failure.responseCode ? `${failure.code}: ${text}` : text;
}

/** The recipients refused at RCPT, from sendMail's result or its error (all refused). */
export function rejectedErrorsOf(resultOrError: unknown): RejectedError[] {
  const list = (resultOrError as { rejectedErrors?: unknown } | undefined)?.rejectedErrors;
  return Array.isArray(list) ? (list as RejectedError[]) : [];
}

/** The SIZE a connected SMTPConnection's server declared: 0 for none. */
export function advertisedSize(connection: SMTPConnection): number {
  const internals = connection as unknown as { _maxAllowedSize?: number; _supportedExtensions?: string[] };
  return internals._supportedExtensions?.includes('SIZE') ? (internals._maxAllowedSize ?? 0) : 0;
}

// nodemailer opens its sockets with Nagle's algorithm on. The end of every message (the last
// chunk, then "\r\n.\r\n") is then two small writes, and the second waits for the ESP to
// acknowledge the first, which a receiver delays by up to 40 ms: about 45 ms lost per message
// and connection (measured: 21 messages/s over one connection, 358/s without Nagle).
// nodemailer has no option for TCP_NODELAY, but it lets the caller supply the connection
// (`getSocket` returning `{ connection }`); it still does implicit TLS, STARTTLS and the rest.
//
// The socket is handed over while it is still connecting, so that a failure to connect
// reaches nodemailer's own error handling (which takes the connection out of its pool); a
// connection that hangs is ended by nodemailer's greeting timeout.

interface SocketRequest {
  host?: string;
  port?: number;
}

type SocketCallback = (err: Error | null, socketOptions?: { connection: net.Socket }) => void;

/** nodemailer's `getSocket`: a TCP connection to the upstream with TCP_NODELAY set. */
export function connectWithoutDelay(options: SocketRequest, callback: SocketCallback): void {
  const socket = net.connect({ host: options.host, port: options.port ?? 587, noDelay: true });
  // nodemailer attaches its handler synchronously in the callback below; this one only makes
  // sure that an error can never be an uncaught exception.
  socket.on('error', () => undefined);
  callback(null, { connection: socket });
}
