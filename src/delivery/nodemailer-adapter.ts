// Everything the relay knows about nodemailer beyond its documented options lives here, so that
// an upgrade that changes it breaks one file, and test/unit/nodemailer-adapter.test.ts says so:
//  - the shape of its errors (`code`, `command`, `responseCode`, `response`), turned into the
//    facts the delivery decision needs (classify.ts);
//  - `rejectedErrors`, the per-recipient refusals on a result or an error (not in its types);
//  - `_supportedExtensions` and `_maxAllowedSize` of a connection: the ESP's SIZE (private);
//  - `getSocket`, the hook through which the caller supplies the connection (TCP_NODELAY);
//  - two patches of SMTPConnection's prototype (the end of this file), over `_setEnvelope`,
//    `_getDsnRcptToArgs`, `_sendCommand`, `_envelope` and `_recipientQueue`, and the envelope
//    keys nodemailer copies along to the connection:
//    each RCPT TO line carries its own recipient's NOTIFY and ORCPT, and SMTPUTF8 is passed on
//    MAIL, or the message refused, by what that connection's EHLO offered.
import net from 'node:net';
import { domainToASCII } from 'node:url';
import SMTPConnection from 'nodemailer/lib/smtp-connection/index.js';
import { encodeXtext } from '../smtp/esmtp-params.js';
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

// nodemailer takes one `dsn` for a whole transaction: one NOTIFY and one ORCPT for every RCPT
// TO line, where RFC 3461 gives each recipient its own. And it adds SMTPUTF8 to MAIL only when
// an address is non-ASCII, and sends the message anyway (raw) when the ESP does not offer it.
// Both are decided inside SMTPConnection, per connection, after its EHLO: so the relay patches
// two of its methods, once, here. A transaction without `smarthost` extras in its envelope (a
// one-off check from the CLI) goes through nodemailer's own code unchanged.

/** What one transaction asks of the SMTP client beyond nodemailer's options. */
export interface TransactionExtras {
  /** Each recipient's NOTIFY (e.g. "SUCCESS,FAILURE") and ORCPT ("rfc822;a@example.com", decoded). */
  recipients?: { address: string; notify?: string; orcpt?: string }[];
  /**
   * The message came with SMTPUTF8. `required`: it has non-ASCII addresses or header fields,
   * and must not go to an ESP that does not offer SMTPUTF8 (`reason` says which); `requested`:
   * pass SMTPUTF8 on where offered, send it as it is elsewhere (all of it is ASCII).
   */
  smtpUtf8?: { need: 'required' | 'requested'; reason?: string };
}

/** The envelope key the extras travel under (nodemailer copies unknown envelope keys along). */
const EXTRAS = 'smarthost';

/** A nodemailer `envelope` carrying `extras` to the patched connection. */
export function envelopeWithExtras<T extends object>(envelope: T, extras: TransactionExtras): T {
  return { ...envelope, [EXTRAS]: extras };
}

/** The refusal when SMTPUTF8 is needed and not offered: a permanent failure of the message. */
export function smtpUtf8Refusal(reason = 'the message has non-ASCII addresses'): SmtpFailure & Error {
  const text = `the upstream does not support SMTPUTF8; ${reason}`;
  return Object.assign(new Error(text), {
    code: 'ESMTPUTF8',
    command: 'MAIL FROM',
    // Not the ESP's words but ours, in the form of the reply RFC 6531 3.7.1 gives for it, so
    // that the decision (classify.ts: 5xx at MAIL) and the bounce's Status (5.6.7) follow.
    responseCode: 553,
    response: `553 5.6.7 ${text}`,
  });
}

/** The private side of SMTPConnection the patches use (nodemailer 7). */
export interface ConnectionInternals {
  _envelope: ({ to: string[] } & { [EXTRAS]?: TransactionExtras }) | false;
  _supportedExtensions: string[];
  _recipientQueue: string[];
  _setEnvelope(
    envelope: Record<string, unknown>,
    callback: (err: Error | null, info?: unknown) => void,
  ): void;
  _getDsnRcptToArgs(): string;
  _sendCommand(str: string, logStr?: string): void;
}

const PATCHED = Symbol.for('smarthost.nodemailer.patched');

/**
 * Patches SMTPConnection's prototype (idempotent; done when this module loads). Throws at once
 * when a method it wraps is gone: better a relay that does not start than DSN parameters
 * silently dropped (test/unit/nodemailer-adapter.test.ts says which).
 */
export function installConnectionPatches(
  proto = SMTPConnection.prototype as unknown as ConnectionInternals,
): void {
  const marked = proto as unknown as Record<symbol, boolean>;
  if (marked[PATCHED]) return;
  for (const name of ['_setEnvelope', '_getDsnRcptToArgs', '_sendCommand'] as const) {
    if (typeof proto[name] !== 'function') {
      throw new Error(`nodemailer's SMTPConnection has no ${name}: nodemailer-adapter.ts needs updating`);
    }
  }
  const setEnvelope = proto._setEnvelope;
  const dsnRcptToArgs = proto._getDsnRcptToArgs;

  proto._setEnvelope = function (this: ConnectionInternals, envelope, callback) {
    const utf8 = (envelope?.[EXTRAS] as TransactionExtras | undefined)?.smtpUtf8;
    if (!utf8) return setEnvelope.call(this, envelope, callback);
    if (!this._supportedExtensions.includes('SMTPUTF8')) {
      if (utf8.need === 'required') return callback(smtpUtf8Refusal(utf8.reason));
      return setEnvelope.call(this, envelope, callback);
    }
    // Offered: on MAIL whatever the addresses (the headers may need it). The one command
    // _setEnvelope sends is MAIL; the shadow lives for this call only.
    const own = this as unknown as Record<string, unknown>;
    own._sendCommand = (str: string, logStr?: string) => {
      if (/^MAIL FROM:/i.test(str) && !/ SMTPUTF8(?: |$)/i.test(str)) str += ' SMTPUTF8';
      proto._sendCommand.call(this, str, logStr);
    };
    try {
      setEnvelope.call(this, envelope, callback);
    } finally {
      delete own._sendCommand;
    }
  };

  proto._getDsnRcptToArgs = function (this: ConnectionInternals) {
    const list = this._envelope ? this._envelope[EXTRAS]?.recipients : undefined;
    if (!list) return dsnRcptToArgs.call(this);
    if (!this._supportedExtensions.includes('DSN')) return '';
    // Called right after the recipient is queued for its RCPT TO line (pipelined or not).
    const current = this._recipientQueue[this._recipientQueue.length - 1];
    const own = current === undefined ? undefined : findRecipient(list, current);
    const args: string[] = [];
    if (own?.notify) args.push(`NOTIFY=${encodeXtext(own.notify)}`);
    if (own?.orcpt) args.push(`ORCPT=${orcptArg(own.orcpt)}`);
    return args.length ? ` ${args.join(' ')}` : '';
  };
  marked[PATCHED] = true;
}

/**
 * ORCPT's wire form (RFC 3461 4.2): addr-type ";" xtext. Only the address is xtext (the type is
 * an atom: encoding it would turn a "+" in it into "+2B").
 */
export function orcptArg(orcpt: string): string {
  const semi = orcpt.indexOf(';');
  if (semi < 0) return `rfc822;${encodeXtext(orcpt)}`;
  return `${orcpt.slice(0, semi)};${encodeXtext(orcpt.slice(semi + 1))}`;
}

/**
 * A recipient's extras by the address nodemailer is about to send: as given, or as nodemailer
 * rewrote it (an IDN domain in punycode).
 */
function findRecipient<T extends { address: string }>(list: T[], address: string): T | undefined {
  const exact = list.find((r) => r.address === address);
  if (exact) return exact;
  const key = normalised(address);
  return list.find((r) => normalised(r.address) === key);
}

function normalised(address: string): string {
  const at = address.lastIndexOf('@');
  if (at < 0) return address.toLowerCase();
  const domain = address.slice(at + 1);
  return `${address.slice(0, at)}@${(domainToASCII(domain) || domain).toLowerCase()}`;
}

installConnectionPatches();
