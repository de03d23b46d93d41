// Structured logging with winston: one line per event, JSON lines when stdout is not a
// terminal (for journald, Docker, log shippers), readable lines on a terminal. Events of a
// message's life carry its queue id under `id`.
//
// Two safety nets run as a winston format, so no call site can forget them:
// - secrets: a field named like a password or token is always replaced by "[redacted]";
// - privacy (`log.maskAddresses: true`): the local part of every email address in every
//   line is masked ("alice@corp.example" → "a***@corp.example"), whether it sits in a field
//   named from/to/sender/recipient/user… or inside any other text (an upstream's reply,
//   the message itself).
import { Writable } from 'node:stream';
import winston from 'winston';
import type { EventName } from './events.js';

export type { EventName } from './events.js';

/**
 * The fields of a log line. `event` is required and is one of the names in events.ts, so a
 * typo or a new name not added there fails to type-check.
 */
export interface LogFields {
  event: EventName;
  [field: string]: unknown;
}

type LogMethod = (message: string, fields: LogFields) => Logger;

/** winston's logger, with every line's fields typed as {@link LogFields}. */
export interface Logger extends Omit<winston.Logger, 'error' | 'warn' | 'info' | 'debug' | 'log'> {
  error: LogMethod;
  warn: LogMethod;
  info: LogMethod;
  debug: LogMethod;
  log(level: string, message: string, fields: LogFields): Logger;
}

export interface LogOptions {
  level: string;
  format: 'auto' | 'json' | 'text';
  /** Mask the local part of addresses in every line (privacy rules). Default false. */
  maskAddresses?: boolean;
}

/** Settings a reload may change on a running logger (the level and the mask). */
interface LiveSettings {
  maskAddresses: boolean;
}

const settings = new WeakMap<Logger, LiveSettings>();

/** Fields whose value is an address (or a list of them), or a login, masked whole. */
const ADDRESS_FIELDS = new Set([
  'from',
  'to',
  'cc',
  'bcc',
  'sender',
  'recipient',
  'recipients',
  'rcpt',
  'rcptto',
  'mailfrom',
  'originalfrom',
  'address',
  'addresses',
  'user',
  'username',
  'login',
  'email',
  'replyto',
  'returnpath',
]);

/** Fields never written, whatever their value. */
const SECRET_FIELD =
  /^(pass|password|passwd|secret|token|accesstoken|refreshtoken|clientsecret|apikey|authorization)$/;

// Something@domain: the local part is any run without spaces, quotes, brackets or separators.
const ADDRESS_IN_TEXT = /([A-Za-z0-9!#$%&'*+/=?^_`{|}~.-]+)@([A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+)/g;

function normaliseKey(key: string): string {
  return key.toLowerCase().replace(/[_-]/g, '');
}

/** "alice@corp.example" → "a***@corp.example", for `log.maskAddresses`. */
export function maskAddress(address: string): string {
  const at = address.lastIndexOf('@');
  if (at <= 0) return address ? '***' : address;
  return `${address[0]}***${address.slice(at)}`;
}

/** Masks every address found in a piece of text, leaving the rest as it is. */
export function maskAddressesInText(text: string): string {
  return text.replace(ADDRESS_IN_TEXT, (_m, local: string, domain: string) => `${local[0]}***@${domain}`);
}

/** Plain objects and arrays are walked; anything else (Date, Buffer, class instances) is left. */
function isPlain(value: object): boolean {
  const proto = Object.getPrototypeOf(value) as unknown;
  return Array.isArray(value) || proto === Object.prototype || proto === null;
}

function maskValue(value: unknown, addressField: boolean, depth: number): unknown {
  if (typeof value === 'string') return addressField ? maskAddress(value) : maskAddressesInText(value);
  if (depth > 4 || value === null || typeof value !== 'object') return value;
  if (value instanceof Error) return maskAddressesInText(value.message);
  if (!isPlain(value)) return value;
  if (Array.isArray(value)) return value.map((v) => maskValue(v, addressField, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    out[key] = maskValue(v, addressField || ADDRESS_FIELDS.has(normaliseKey(key)), depth + 1);
  }
  return out;
}

function redactSecrets(value: unknown, depth: number): unknown {
  if (depth > 4 || value === null || typeof value !== 'object' || !isPlain(value)) return value;
  if (Array.isArray(value)) return value.map((v) => redactSecrets(v, depth + 1));
  const out: Record<string, unknown> = {};
  for (const [key, v] of Object.entries(value)) {
    out[key] = SECRET_FIELD.test(normaliseKey(key)) ? '[redacted]' : redactSecrets(v, depth + 1);
  }
  return out;
}

/** The privacy and secrets format. Exported for tests; createLogger puts it first. */
export const privacyFormat = winston.format((info, opts: unknown) => {
  const mask = (opts as { live?: LiveSettings } | undefined)?.live?.maskAddresses === true;
  for (const key of Object.keys(info)) {
    if (key === 'level' || key === 'timestamp') continue;
    const norm = normaliseKey(key);
    if (SECRET_FIELD.test(norm)) {
      info[key] = '[redacted]';
      continue;
    }
    let value = info[key];
    if (value !== null && typeof value === 'object') value = redactSecrets(value, 0);
    if (mask) value = maskValue(value, key !== 'message' && ADDRESS_FIELDS.has(norm), 0);
    info[key] = value;
  }
  return info;
});

export function createLogger(options: LogOptions, stream: NodeJS.WritableStream = process.stdout): Logger {
  const live: LiveSettings = { maskAddresses: options.maskAddresses === true };
  const json =
    options.format === 'json' || (options.format === 'auto' && !(stream as NodeJS.WriteStream).isTTY);
  const format = json
    ? winston.format.combine(privacyFormat({ live }), winston.format.timestamp(), winston.format.json())
    : winston.format.combine(
        privacyFormat({ live }),
        winston.format.timestamp({ format: 'HH:mm:ss' }),
        winston.format.printf(({ timestamp, level, message, ...fields }) => {
          const extra = Object.entries(fields)
            .filter(([, v]) => v !== undefined)
            .map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`)
            .join(' ');
          return `${timestamp} ${level.padEnd(5)} ${message}${extra ? ` ${extra}` : ''}`;
        }),
      );
  const logger = winston.createLogger({
    level: options.level,
    format,
    transports: [new winston.transports.Stream({ stream })],
  });
  settings.set(logger, live);
  return logger;
}

/**
 * A stream that writes to `target` (stdout) once per turn of the event loop. Writes to stdout
 * are synchronous when it is a file or a pipe (journald, Docker): one system call a line, and
 * under load, at two lines a message, that was about 4% of the relay's thread. Lines written in
 * one turn go out together at its end; at exit (also after an uncaught error) what is left is
 * written before the process ends. A kill -9 can lose the lines of its last turn, never mail.
 */
export class BatchedOutput extends Writable {
  readonly isTTY: boolean;
  private pending: string[] = [];

  constructor(private readonly target: NodeJS.WritableStream = process.stdout) {
    super({ decodeStrings: false });
    this.isTTY = (target as NodeJS.WriteStream).isTTY === true;
    process.once('exit', () => this.flush());
  }

  override _write(
    chunk: string | Buffer,
    _encoding: BufferEncoding,
    done: (error?: Error | null) => void,
  ): void {
    if (this.pending.push(chunk.toString()) === 1) setImmediate(() => this.flush());
    done();
  }

  private flush(): void {
    if (this.pending.length === 0) return;
    const text = this.pending.join('');
    this.pending = [];
    this.target.write(text);
  }
}

/** Applies a reloaded config's `log.level` and `log.maskAddresses` to a running logger. */
export function applyLogOptions(logger: Logger, options: Pick<LogOptions, 'level' | 'maskAddresses'>): void {
  logger.level = options.level;
  const live = settings.get(logger);
  if (live) live.maskAddresses = options.maskAddresses === true;
}

export function silentLogger(): Logger {
  return winston.createLogger({ silent: true, transports: [new winston.transports.Console()] });
}
