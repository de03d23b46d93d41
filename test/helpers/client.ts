// SMTP clients for tests: nodemailer as a real-world client (sendMail), and a bare socket for
// exact protocol control (rawSmtpSession).
import { promises as dns } from 'node:dns';
import net from 'node:net';
import tls from 'node:tls';
import nodemailer from 'nodemailer';
import type SMTPTransport from 'nodemailer/lib/smtp-transport/index.js';

export interface SendMailOptions {
  port: number;
  /** Default 127.0.0.1. A name is resolved with the system resolver (/etc/hosts) here, see below. */
  host?: string;
  /** Envelope sender ('' for the null sender). Also the From header when `raw` is not given. */
  from: string;
  /** Envelope recipients. Also the To header when `raw` is not given. */
  to: string[];
  /** The whole message, sent as is (headers and body). Otherwise one is built from subject/text. */
  raw?: string | Buffer;
  subject?: string;
  text?: string;
  /** Extra headers for a built message. */
  headers?: Record<string, string>;
  /** Bind the client to this source address (e.g. 127.0.0.2, outside an allowlist). */
  localAddress?: string;
  auth?: { user: string; pass: string };
  /** Fail unless STARTTLS succeeds. */
  requireTls?: boolean;
  /** Never use STARTTLS even when offered. */
  ignoreTls?: boolean;
  /** Implicit TLS (port 465 style). */
  secure?: boolean;
  /** The EHLO name, default 'client.test'. */
  name?: string;
  /** TLS options; default `{ rejectUnauthorized: false }` (the relay's certificate is self-signed). */
  tls?: tls.ConnectionOptions;
  /** Connection, greeting and socket timeouts, default 15 s. */
  timeoutMs?: number;
}

export type SendMailResult =
  | {
      ok: true;
      /** The final reply to DATA, e.g. '250 2.0.0 Ok: queued as 1A2B3C'. */
      response: string;
      /** Parsed from 'queued as <id>'. */
      queueId?: string;
      accepted: string[];
      /** Recipients refused at RCPT while others were accepted. */
      rejected: string[];
    }
  | {
      ok: false;
      /** The SMTP reply code, absent for connection/TLS/timeout failures. */
      code?: number;
      /** The server's reply text (or the error message when there is none). */
      response: string;
      /** e.g. 'EENVELOPE', 'EAUTH', 'ECONNECTION', 'ETLS', 'ESOCKET', 'EMESSAGE'. */
      errorCode?: string;
      /** The SMTP command that failed, e.g. 'MAIL FROM', 'RCPT TO', 'DATA', 'CONN'. */
      command?: string;
      /** Recipients refused, when all were. */
      rejected?: string[];
      error: Error;
    };

interface NodemailerError extends Error {
  code?: string;
  response?: string;
  responseCode?: number;
  command?: string;
  rejected?: string[];
}

/** Extracts the queue id from a reply such as '250 2.0.0 Ok: queued as 1A2B3C'. */
export function parseQueueId(response: string): string | undefined {
  return /queued as ([A-Za-z0-9._:-]+)/i.exec(response)?.[1];
}

/**
 * nodemailer resolves a host name with dns.resolve4/resolve6 (a query to the configured DNS
 * server, never /etc/hosts) before falling back to dns.lookup. Tests must stay on loopback, so
 * a name is resolved here with dns.lookup and the name kept for SNI and certificate checks.
 */
async function resolveLoopback(host: string): Promise<{ address: string; servername?: string }> {
  if (net.isIP(host)) return { address: host };
  const { address } = await dns.lookup(host);
  return { address, servername: host };
}

/** Sends one message through a real SMTP client. Never throws for SMTP refusals or I/O errors. */
export async function sendMail(opts: SendMailOptions): Promise<SendMailResult> {
  const timeout = opts.timeoutMs ?? 15_000;
  let transport: nodemailer.Transporter<SMTPTransport.SentMessageInfo> | undefined;
  try {
    const { address, servername } = await resolveLoopback(opts.host ?? '127.0.0.1');
    const transportOptions: SMTPTransport.Options = {
      host: address,
      port: opts.port,
      secure: opts.secure ?? false,
      requireTLS: opts.requireTls ?? false,
      ignoreTLS: opts.ignoreTls ?? false,
      name: opts.name ?? 'client.test',
      localAddress: opts.localAddress,
      auth: opts.auth,
      tls: { rejectUnauthorized: false, ...(servername ? { servername } : {}), ...opts.tls },
      connectionTimeout: timeout,
      greetingTimeout: timeout,
      socketTimeout: timeout,
      // Not pooled (the default): one connection per call.
      logger: false,
      debug: false,
    };
    transport = nodemailer.createTransport(transportOptions);
    const envelope = { from: opts.from, to: opts.to };
    const message = opts.raw
      ? { envelope, raw: opts.raw }
      : {
          envelope,
          from: opts.from || 'mailer-daemon@client.test',
          to: opts.to,
          subject: opts.subject ?? 'Test message',
          text: opts.text ?? 'Hello from the smarthost test suite.\n',
          headers: opts.headers,
        };
    const info = await transport.sendMail(message);
    const response = info.response;
    return {
      ok: true,
      response,
      queueId: parseQueueId(response),
      accepted: info.accepted.map(String),
      rejected: info.rejected.map(String),
    };
  } catch (caught) {
    const err = (caught instanceof Error ? caught : new Error(String(caught))) as NodemailerError;
    return {
      ok: false,
      code: typeof err.responseCode === 'number' ? err.responseCode : undefined,
      response: err.response ?? err.message,
      errorCode: err.code,
      command: err.command,
      rejected: err.rejected,
      error: err,
    };
  } finally {
    transport?.close();
  }
}

export interface RawSessionOptions {
  /** Default 127.0.0.1. */
  host?: string;
  localAddress?: string;
  /** Per reply (and for the connection), default 10 s. */
  timeoutMs?: number;
  /** TLS options for a STARTTLS upgrade; default `{ rejectUnauthorized: false }`. */
  tls?: tls.ConnectionOptions;
}

/** Splits an SMTP byte stream into replies (a reply ends with a 'NNN ' or bare 'NNN' line). */
class ReplyReader {
  private buffer = '';
  private current: string[] = [];
  private readonly replies: string[] = [];
  private waiting: ((reply: string | undefined) => void) | undefined;
  private ended = false;
  private socket: net.Socket | undefined;
  private readonly onData = (chunk: Buffer) => this.push(chunk.toString('latin1'));
  private readonly onEnd = () => this.end();

  attach(socket: net.Socket): void {
    this.detach();
    this.socket = socket;
    socket.on('data', this.onData);
    socket.on('close', this.onEnd);
    socket.on('end', this.onEnd);
  }

  detach(): void {
    this.socket?.off('data', this.onData);
    this.socket?.off('close', this.onEnd);
    this.socket?.off('end', this.onEnd);
    this.socket = undefined;
  }

  private push(text: string): void {
    this.buffer += text;
    let index: number;
    while ((index = this.buffer.indexOf('\n')) >= 0) {
      const line = this.buffer.slice(0, index).replace(/\r$/, '');
      this.buffer = this.buffer.slice(index + 1);
      this.current.push(line);
      // 'NNN-text' continues a reply; anything else ('NNN text', 'NNN', garbage) ends it.
      if (!/^\d{3}-/.test(line)) {
        this.deliver(this.current.join('\n'));
        this.current = [];
      }
    }
  }

  private deliver(reply: string): void {
    if (this.waiting) {
      const waiting = this.waiting;
      this.waiting = undefined;
      waiting(reply);
    } else {
      this.replies.push(reply);
    }
  }

  private end(): void {
    if (this.ended) return;
    this.ended = true;
    if (this.current.length || this.buffer) {
      this.deliver([...this.current, this.buffer].filter(Boolean).join('\n'));
      this.current = [];
      this.buffer = '';
    }
    if (this.waiting) {
      const waiting = this.waiting;
      this.waiting = undefined;
      waiting(undefined);
    }
  }

  /** The next reply, or undefined once the connection closed without one. */
  next(timeoutMs: number, what: string): Promise<string | undefined> {
    const queued = this.replies.shift();
    if (queued !== undefined) return Promise.resolve(queued);
    if (this.ended) return Promise.resolve(undefined);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiting = undefined;
        reject(new Error(`rawSmtpSession: no reply to ${what} within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiting = (reply) => {
        clearTimeout(timer);
        resolve(reply);
      };
    });
  }
}

/**
 * Opens a plain TCP connection, waits for the greeting, then writes each line (CRLF added) and
 * waits for its reply. Returns every reply in order, the greeting first: `replies[0]` is the
 * greeting and `replies[i + 1]` the reply to `lines[i]`. Multi-line replies are joined with '\n'.
 * Stops early (returning what it has) when the server closes the connection.
 *
 * A line 'STARTTLS' answered with 220 upgrades the connection to TLS. To send a message, give
 * 'DATA' as one line and the whole message ending with '\r\n.' as the next.
 */
export async function rawSmtpSession(
  port: number,
  lines: string[],
  opts: RawSessionOptions = {},
): Promise<string[]> {
  const host = opts.host ?? '127.0.0.1';
  const timeoutMs = opts.timeoutMs ?? 10_000;
  let socket: net.Socket = await new Promise<net.Socket>((resolve, reject) => {
    const s = net.connect({ host, port, localAddress: opts.localAddress });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`rawSmtpSession: could not connect to ${host}:${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      s.off('error', reject);
      resolve(s);
    });
    s.once('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
  });
  // Errors after connecting (a reset) just end the session; the reader sees 'close'.
  socket.on('error', () => undefined);
  const reader = new ReplyReader();
  reader.attach(socket);
  const replies: string[] = [];
  try {
    const greeting = await reader.next(timeoutMs, 'the connection (greeting)');
    if (greeting === undefined) return replies;
    replies.push(greeting);
    for (const line of lines) {
      if (socket.destroyed || !socket.writable) break;
      socket.write(`${line}\r\n`);
      const reply = await reader.next(timeoutMs, JSON.stringify(line.slice(0, 60)));
      if (reply === undefined) break;
      replies.push(reply);
      if (/^starttls$/i.test(line.trim()) && reply.startsWith('220')) {
        reader.detach();
        const plain = socket;
        socket = await new Promise<tls.TLSSocket>((resolve, reject) => {
          const secure = tls.connect({
            socket: plain,
            rejectUnauthorized: false,
            ...(net.isIP(host) ? {} : { servername: host }),
            ...opts.tls,
          });
          secure.once('secureConnect', () => {
            secure.off('error', reject);
            resolve(secure);
          });
          secure.once('error', reject);
        });
        socket.on('error', () => undefined);
        reader.attach(socket);
      }
    }
    return replies;
  } finally {
    reader.detach();
    socket.destroy();
  }
}
