// The small, rewritable half of a queued message: its envelope and delivery state.
// A new message keeps it after its body, in one file (one-file.ts); from its first retry it is
// <id>.json beside the body <id>.eml, which is never touched again: a retry rewrites only this.
import { randomBytes } from 'node:crypto';

export type RecipientStatus = 'pending' | 'delivered' | 'failed';

export interface RecipientState {
  address: string;
  status: RecipientStatus;
  /** The last reply or error for this recipient. */
  lastReply?: string;
  /** Which upstream took it, once delivered. */
  upstream?: string;
  /**
   * RFC 3461 NOTIFY as the client gave it at RCPT (upper case). Absent: the default, a
   * notice on failure only. ['NEVER']: no notice whatever happens.
   */
  notify?: DsnNotify[];
  /** RFC 3461 ORCPT as given at RCPT, xtext decoded: "rfc822;a@example.com". */
  orcpt?: string;
}

export type DsnNotify = 'NEVER' | 'SUCCESS' | 'FAILURE' | 'DELAY';

/** The RFC 3461 parameters of MAIL FROM: what a bounce returns, and the client's own id. */
export interface DsnRequest {
  /** FULL: the whole message in a bounce; HDRS: its headers only. Absent: our choice (FULL). */
  ret?: 'FULL' | 'HDRS';
  /** ENVID, xtext decoded. */
  envid?: string;
}

export interface QueueEntry {
  id: string;
  /** Envelope sender after rewriting; '' is the null sender <> (bounces). */
  from: string;
  /** The sender as the client gave it, before any rewriting. */
  originalFrom: string;
  recipients: RecipientState[];
  /** The source (allowlist entry or user name) that sent it. */
  source: string;
  client: { address: string; helo?: string; user?: string };
  size: number;
  createdAt: number;
  attempts: number;
  nextAttemptAt: number;
  lastError?: string;
  /** Set on delivery status notifications we generated, so a bounce never bounces to a sender. */
  bounceOf?: string;
  /**
   * The body's CRC-32, written with a new message and checked before its first attempt after a
   * restart (a crash before the body's fsync leaves a complete .json with a partial body).
   * Dropped once the body is known to be durable.
   */
  bodyCrc32?: number;
  /** RET and ENVID of MAIL FROM, when the client gave either. */
  dsn?: DsnRequest;
  /** MAIL FROM carried SMTPUTF8: the envelope or headers may hold UTF-8 addresses. */
  smtpUtf8?: boolean;
  /** MAIL FROM's BODY=8BITMIME, when given. */
  bodyType?: '7bit' | '8bitmime';
  /**
   * The stored message has a byte outside ASCII, declared or not (a device that sends UTF-8 or
   * Latin-1 text without BODY=8BITMIME): it leaves with BODY=8BITMIME where the ESP offers
   * 8BITMIME (RFC 6152 allows 8-bit data only under that declaration).
   */
  eightBit?: boolean;
  /**
   * In memory only, never stored: the message is still one file, <id>.msg (its body, then this
   * envelope: one-file.ts), not yet split into <id>.eml and <id>.json.
   */
  oneFile?: true;
}

/** Queue ids sort by arrival time: 8 base-36 characters of milliseconds, then 10 random hex. */
export function newQueueId(now = Date.now()): string {
  return now.toString(36).toUpperCase().padStart(9, '0') + randomHex(5).toUpperCase();
}

// Random bytes for ids come from a pool refilled 4 KB at a time: one call into the system's
// random source per ~800 ids instead of one each (it showed at ~1% of the CPU under load).
// Ids only need to be unique, not secret.
let pool = Buffer.alloc(0);
let poolOffset = 0;

function randomHex(bytes: number): string {
  if (poolOffset + bytes > pool.length) {
    pool = randomBytes(4096);
    poolOffset = 0;
  }
  poolOffset += bytes;
  return pool.toString('hex', poolOffset - bytes, poolOffset);
}

/** Arrival time of a queue id (newQueueId): its first nine characters are milliseconds in base 36. */
export function queueIdTime(id: string): number | undefined {
  const ms = parseInt(id.slice(0, 9), 36);
  return Number.isFinite(ms) ? ms : undefined;
}

export const QUEUE_ID_PATTERN = /^[0-9A-Z]{9}[0-9A-F]{10}$/;

export function pendingRecipients(entry: QueueEntry): string[] {
  return entry.recipients.filter((r) => r.status === 'pending').map((r) => r.address);
}
