// A stand-in for the upstream ESP (the SMTP submission server the relay delivers to), built on
// smtp-server. Like a real ESP on port 587 it wants STARTTLS and then AUTH before MAIL, records
// every message it accepts, and can be scripted to refuse senders, recipients or messages, and
// to go away and come back on the same port (an outage).
import path from 'node:path';
import { promises as fs } from 'node:fs';
import type { Readable } from 'node:stream';
import { SMTPServer, type SMTPServerSession } from 'smtp-server';
import { makeSelfSignedCert } from './certs.js';
import { makeTempDir, removeTempDir } from './tmp.js';

/** A scripted SMTP reply, e.g. `{ code: 550, message: '5.1.1 No such user' }`. */
export interface EspReply {
  code: number;
  /** The text after the code, sent verbatim (smtp-server's enhanced codes are off: include one). */
  message: string;
}

/** A message the ESP accepted (or, for `onData`, is about to decide on). */
export interface EspMessage {
  /** Envelope sender ('' for the null sender <>). */
  from: string;
  /** Envelope recipients the ESP accepted at RCPT. */
  to: string[];
  /** The message exactly as received (dot-unstuffed, CRLF line ends). */
  raw: Buffer;
  receivedAt: number;
  /** The user that authenticated, if any. */
  user?: string;
  /** Whether the session was using TLS. */
  secure: boolean;
  /** The client's address as seen by the ESP. */
  remoteAddress: string;
  /** The smtp-server session id (same id for messages sent over one connection). */
  sessionId: string;
  /** With `dsn: true`: MAIL's RET/ENVID and each recipient's NOTIFY/ORCPT as received. */
  dsn?: { ret?: string; envid?: string; recipients: { notify?: string[]; orcpt?: string }[] };
  /** MAIL FROM carried SMTPUTF8. */
  smtpUtf8: boolean;
  /** MAIL FROM's BODY (RFC 6152): '8bitmime' when given so, else '7bit'. */
  bodyType: '7bit' | '8bitmime';
}

type MaybePromise<T> = T | Promise<T>;
/** Returning `undefined` (or a 2xx/3xx reply) accepts; a 4xx/5xx reply refuses. */
export type EspAddressHandler = (
  address: string,
  session: SMTPServerSession,
) => MaybePromise<EspReply | undefined>;
export type EspDataHandler = (
  message: EspMessage,
  session: SMTPServerSession,
) => MaybePromise<EspReply | undefined>;

/** What a client logged in with (smtp-server's auth object). */
export interface EspAuth {
  method: string;
  username?: string;
  password?: string;
  /** XOAUTH2 only. */
  accessToken?: string;
}
/**
 * Decides a login: true accepts, false refuses (535 5.7.8; for XOAUTH2 after a 334 challenge
 * carrying a JSON error, the way Gmail does), a reply refuses with that reply at once.
 */
export type EspAuthHandler = (auth: EspAuth, session: SMTPServerSession) => MaybePromise<boolean | EspReply>;

export interface EspOptions {
  /** Names and addresses its certificate is made for (default 127.0.0.1, localhost, ::1). */
  certHosts?: string[];
  /** Listen address, default 127.0.0.1. */
  host?: string;
  /** Default 0 (a random free port). */
  port?: number;
  /** The name in the greeting and EHLO reply, default 'esp.test'. */
  hostname?: string;
  /** Default 'apikey'. */
  user?: string;
  /** Default 'secret-pass'. */
  pass?: string;
  /** MAIL needs a successful AUTH first (530 5.7.0 otherwise). Default true. */
  requireAuth?: boolean;
  /** AUTH and MAIL need STARTTLS first (538 / 530 5.7.0 otherwise). Default true. */
  requireTls?: boolean;
  /** Advertise and accept STARTTLS at all. Default true; false implies requireTls false. */
  offerTls?: boolean;
  /** SIZE limit in bytes; larger messages are refused with 552 5.3.4. Default none. */
  size?: number;
  /** SASL mechanisms offered, default ['PLAIN', 'LOGIN'] (['XOAUTH2'] for an OAuth2-only ESP). */
  authMethods?: string[];
  /** Decides logins instead of the user/pass check (needed for XOAUTH2). */
  onAuth?: EspAuthHandler;
  onMail?: EspAddressHandler;
  onRcpt?: EspAddressHandler;
  onData?: EspDataHandler;
  /** Advertise DSN (RFC 3461) and record its parameters on each message. Default false. */
  dsn?: boolean;
  /** Advertise SMTPUTF8 (RFC 6531) in EHLO. Default true (as smtp-server does). */
  smtpUtf8?: boolean;
  /** Advertise 8BITMIME (RFC 6152) in EHLO. Default true (as smtp-server does). */
  eightBitMime?: boolean;
}

export interface Esp {
  readonly host: string;
  /** Fixed at the first start; stop()/start() keep it. */
  readonly port: number;
  readonly user: string;
  readonly pass: string;
  /** The certificate PEM the ESP presents (self-signed, SANs 127.0.0.1, localhost, ::1). */
  readonly cert: string;
  /** A file holding `cert`, for the relay's `upstream.ca`. */
  readonly caFile: string;
  /** Messages accepted, in order. */
  readonly messages: EspMessage[];
  /** Every DATA transaction that reached the end of the message, accepted or refused. */
  dataAttempts: number;
  /** Connections accepted (each SMTP session counts once). */
  connections: number;
  /** Failed AUTH attempts. */
  authFailures: number;
  /** Server-side errors (client resets, TLS failures), for debugging. */
  readonly errors: Error[];
  onMail: EspAddressHandler | undefined;
  onRcpt: EspAddressHandler | undefined;
  onData: EspDataHandler | undefined;
  readonly listening: boolean;
  /** Resolves once `messages.length >= count`; rejects after `timeoutMs` (default 20 s). */
  waitFor(count: number, timeoutMs?: number): Promise<void>;
  /** Stops listening and drops every open connection at once (an outage). */
  stop(): Promise<void>;
  /** Listens again on the same host and port. */
  start(): Promise<void>;
  /** Stops and removes the temp dir holding `caFile`. */
  close(): Promise<void>;
  /** Forgets messages and counters (handlers stay). */
  reset(): void;
}

function smtpError(reply: EspReply): Error {
  return Object.assign(new Error(reply.message), { responseCode: reply.code });
}

/** A reply that refuses, or undefined when the handler accepted. */
function refusal(reply: EspReply | undefined): Error | undefined {
  return reply && reply.code >= 400 ? smtpError(reply) : undefined;
}

function handlerFailure(err: unknown): Error {
  const text = err instanceof Error ? err.message : String(err);
  return smtpError({ code: 451, message: `4.3.0 ESP test handler threw: ${text}` });
}

async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream)
    chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string));
  return Buffer.concat(chunks);
}

class EspServer implements Esp {
  readonly host: string;
  port: number;
  readonly user: string;
  readonly pass: string;
  readonly messages: EspMessage[] = [];
  readonly errors: Error[] = [];
  dataAttempts = 0;
  connections = 0;
  authFailures = 0;
  onMail: EspAddressHandler | undefined;
  onRcpt: EspAddressHandler | undefined;
  onData: EspDataHandler | undefined;
  listening = false;

  private server: SMTPServer | undefined;
  private waiters: { count: number; resolve: () => void; reject: (err: Error) => void }[] = [];
  private queueCounter = 0;
  private readonly requireAuth: boolean;
  private readonly requireTls: boolean;
  private readonly offerTls: boolean;

  constructor(
    private readonly opts: EspOptions,
    readonly cert: string,
    private readonly key: string,
    readonly caFile: string,
    private readonly tempDir: string,
  ) {
    this.host = opts.host ?? '127.0.0.1';
    this.port = opts.port ?? 0;
    this.user = opts.user ?? 'apikey';
    this.pass = opts.pass ?? 'secret-pass';
    this.requireAuth = opts.requireAuth ?? true;
    this.offerTls = opts.offerTls ?? true;
    this.requireTls = this.offerTls && (opts.requireTls ?? true);
    this.onMail = opts.onMail;
    this.onRcpt = opts.onRcpt;
    this.onData = opts.onData;
  }

  private createServer(): SMTPServer {
    const server = new SMTPServer({
      name: this.opts.hostname ?? 'esp.test',
      logger: false,
      // Never ask DNS about 127.0.0.1 (a reverse lookup would go to the system resolver).
      disableReverseLookup: true,
      key: this.key,
      cert: this.cert,
      secure: false,
      disabledCommands: this.offerTls ? [] : ['STARTTLS'],
      authMethods: this.opts.authMethods ?? ['PLAIN', 'LOGIN'],
      // AUTH is checked in onMailFrom, after the TLS check, so that the reply says what is
      // missing first (smtp-server's own check would answer "authentication required" even
      // on a clear-text connection).
      authOptional: true,
      allowInsecureAuth: !this.requireTls,
      size: this.opts.size,
      rejectOversized: this.opts.size !== undefined,
      hideDSN: !this.opts.dsn,
      hideSMTPUTF8: this.opts.smtpUtf8 === false,
      hide8BITMIME: this.opts.eightBitMime === false,
      closeTimeout: 1000,
      socketTimeout: 60_000,
      onConnect: (_session, callback) => {
        this.connections++;
        callback();
      },
      onAuth: (auth, session, callback) => {
        const custom = this.opts.onAuth;
        if (custom) {
          Promise.resolve()
            .then(() => custom(auth as EspAuth, session))
            .then(
              (verdict) => {
                if (verdict === true) return callback(null, { user: auth.username });
                this.authFailures++;
                if (verdict !== false) return callback(smtpError(verdict));
                if (auth.method === 'XOAUTH2')
                  return callback(null, {
                    data: { status: '401', schemes: 'bearer', scope: 'https://mail.google.com/' },
                  });
                callback(smtpError({ code: 535, message: '5.7.8 Authentication credentials invalid' }));
              },
              (err: unknown) => callback(handlerFailure(err)),
            );
          return;
        }
        const ok =
          (auth.method === 'PLAIN' || auth.method === 'LOGIN') &&
          auth.username === this.user &&
          auth.password === this.pass;
        if (ok) return callback(null, { user: auth.username });
        this.authFailures++;
        callback(smtpError({ code: 535, message: '5.7.8 Authentication credentials invalid' }));
      },
      onMailFrom: (address, session, callback) => {
        if (this.requireTls && !session.secure) {
          return callback(smtpError({ code: 530, message: '5.7.0 Must issue a STARTTLS command first' }));
        }
        if (this.requireAuth && !session.user) {
          return callback(smtpError({ code: 530, message: '5.7.0 Authentication required' }));
        }
        this.runAddressHandler(this.onMail, address.address, session, callback);
      },
      onRcptTo: (address, session, callback) => {
        this.runAddressHandler(this.onRcpt, address.address, session, callback);
      },
      onData: (stream, session, callback) => {
        readAll(stream)
          .then(async (raw) => {
            this.dataAttempts++;
            if (stream.sizeExceeded) {
              return callback(smtpError({ code: 552, message: '5.3.4 Message too big' }));
            }
            const envelope = session.envelope;
            const message: EspMessage = {
              from: envelope.mailFrom ? envelope.mailFrom.address : '',
              to: envelope.rcptTo.map((r) => r.address),
              raw,
              receivedAt: Date.now(),
              user: typeof session.user === 'string' ? session.user : undefined,
              secure: session.secure,
              remoteAddress: session.remoteAddress,
              sessionId: session.id,
              smtpUtf8: Boolean((envelope as { smtpUtf8?: boolean }).smtpUtf8),
              bodyType: (envelope as { bodyType?: string }).bodyType === '8bitmime' ? '8bitmime' : '7bit',
              ...(this.opts.dsn
                ? {
                    dsn: {
                      ret: envelope.dsn?.ret ?? undefined,
                      envid: envelope.dsn?.envid ?? undefined,
                      recipients: envelope.rcptTo.map((r) => {
                        const d = (r as { dsn?: { notify?: string[]; orcpt?: string } }).dsn;
                        return { notify: d?.notify, orcpt: d?.orcpt };
                      }),
                    },
                  }
                : {}),
            };
            let reply: EspReply | undefined;
            try {
              reply = await this.onData?.(message, session);
            } catch (err) {
              return callback(handlerFailure(err));
            }
            const refused = refusal(reply);
            if (refused) return callback(refused);
            this.messages.push(message);
            this.notifyWaiters();
            callback(null, reply ? reply.message : `2.0.0 Ok: queued as ESP${++this.queueCounter}`);
          })
          .catch((err: unknown) => callback(handlerFailure(err)));
      },
    });
    server.on('error', (err) => {
      this.errors.push(err);
    });
    return server;
  }

  private runAddressHandler(
    handler: EspAddressHandler | undefined,
    address: string,
    session: SMTPServerSession,
    callback: (err?: Error | null) => void,
  ): void {
    if (!handler) return callback();
    Promise.resolve()
      .then(() => handler(address, session))
      .then(
        (reply) => callback(refusal(reply) ?? null),
        (err: unknown) => callback(handlerFailure(err)),
      );
  }

  private notifyWaiters(): void {
    const due = this.waiters.filter((w) => this.messages.length >= w.count);
    this.waiters = this.waiters.filter((w) => this.messages.length < w.count);
    for (const w of due) w.resolve();
  }

  waitFor(count: number, timeoutMs = 20_000): Promise<void> {
    if (this.messages.length >= count) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const waiter = {
        count,
        resolve: () => {
          clearTimeout(timer);
          resolve();
        },
        reject: (err: Error) => {
          clearTimeout(timer);
          reject(err);
        },
      };
      const timer = setTimeout(() => {
        this.waiters = this.waiters.filter((w) => w !== waiter);
        reject(
          new Error(
            `ESP on port ${this.port}: waited ${timeoutMs} ms for ${count} message(s), got ` +
              `${this.messages.length} (DATA attempts: ${this.dataAttempts}, connections: ` +
              `${this.connections}, auth failures: ${this.authFailures}, listening: ${this.listening})`,
          ),
        );
      }, timeoutMs);
      this.waiters.push(waiter);
    });
  }

  async start(): Promise<void> {
    if (this.server) return;
    const server = this.createServer();
    this.server = server;
    try {
      await new Promise<void>((resolve, reject) => {
        const onError = (err: Error) => reject(err);
        server.server.once('error', onError);
        server.listen(this.port, this.host, () => {
          server.server.off('error', onError);
          resolve();
        });
      });
    } catch (err) {
      this.server = undefined;
      throw err;
    }
    const address = server.server.address();
    if (typeof address === 'object' && address) this.port = address.port;
    this.listening = true;
  }

  async stop(): Promise<void> {
    const server = this.server;
    if (!server) return;
    this.server = undefined;
    this.listening = false;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      // Like a crash of the ESP: no 421, the TCP connections just go away.
      for (const connection of server.connections) connection._socket.destroy();
    });
  }

  async close(): Promise<void> {
    await this.stop();
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w.reject(new Error(`ESP closed while waiting for ${w.count} message(s)`));
    await removeTempDir(this.tempDir);
  }

  reset(): void {
    this.messages.length = 0;
    this.dataAttempts = 0;
    this.connections = 0;
    this.authFailures = 0;
    this.errors.length = 0;
  }
}

/** Starts an ESP stand-in on 127.0.0.1 (random port unless `opts.port`). */
export async function startEsp(opts: EspOptions = {}): Promise<Esp> {
  const { key, cert } = await makeSelfSignedCert(opts.certHosts);
  const tempDir = await makeTempDir('smarthost-esp');
  const caFile = path.join(tempDir, 'esp-ca.pem');
  await fs.writeFile(caFile, cert);
  const esp = new EspServer(opts, cert, key, caFile, tempDir);
  try {
    await esp.start();
  } catch (err) {
    await removeTempDir(tempDir);
    throw err;
  }
  return esp;
}
