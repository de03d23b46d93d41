// Shared pieces of the relay end-to-end tests (test/e2e/relay-*.test.ts): the upstream block
// pointing the relay at the ESP stand-in, polling, spool inspection and header parsing.
import { promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Esp, EspMessage } from '../helpers/esp.js';
import type { Relay } from '../helpers/relay.js';

/** The relay's `upstream:` block for the ESP stand-in: STARTTLS + AUTH, its cert trusted via `ca`. */
export function upstreamFor(esp: Esp, overrides: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    host: '127.0.0.1',
    port: esp.port,
    tls: 'starttls',
    user: esp.user,
    pass: esp.pass,
    ca: esp.caFile,
    // Keep failed connection attempts short while the ESP is down.
    timeout: '10s',
    ...overrides,
  };
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * Polls `check` until it returns a truthy value and resolves that value; rejects after
 * `timeoutMs` with `what` and the last value seen (a wait, not a timing assertion).
 */
export async function waitUntil<T>(
  what: string | (() => string),
  check: () => T | Promise<T>,
  timeoutMs = 20_000,
  intervalMs = 50,
): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: T | undefined;
  for (;;) {
    last = await check();
    if (last) return last as NonNullable<T>;
    if (Date.now() > deadline) {
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`,
      );
    }
    await sleep(intervalMs);
  }
}

/** File names in a directory (none when it does not exist). */
export async function filesIn(dir: string): Promise<string[]> {
  try {
    return (await fs.readdir(dir)).sort();
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
}

/** Queue ids of the messages still queued in `<spool>/queue` (<id>.msg, or <id>.json with its .eml). */
export async function queuedIds(spoolDir: string): Promise<string[]> {
  const ids = (await filesIn(path.join(spoolDir, 'queue')))
    .filter((n) => n.endsWith('.json') || n.endsWith('.msg'))
    .map((n) => n.replace(/\.(json|msg)$/, ''));
  return [...new Set(ids)];
}

/** The header block of a raw message (without the blank line) and the body after it. */
export function splitMessage(raw: Buffer | string): { head: string; body: string } {
  const text = Buffer.isBuffer(raw) ? raw.toString('latin1') : raw;
  const end = text.indexOf('\r\n\r\n');
  if (end === -1) return { head: text, body: '' };
  return { head: text.slice(0, end), body: text.slice(end + 4) };
}

/** Unfolded header fields in order, as [lower-cased name, value]; each with its raw text. */
export function headerFields(raw: Buffer | string): { name: string; value: string; raw: string }[] {
  const { head } = splitMessage(raw);
  const fields: { name: string; value: string; raw: string }[] = [];
  for (const line of head.split('\r\n')) {
    const last = fields[fields.length - 1];
    if (/^[ \t]/.test(line) && last) {
      last.raw += `\r\n${line}`;
      last.value += ` ${line.trim()}`;
      continue;
    }
    const colon = line.indexOf(':');
    fields.push({
      name: line.slice(0, colon).trim().toLowerCase(),
      value: line.slice(colon + 1).trim(),
      raw: line,
    });
  }
  return fields;
}

/** The values of one header, unfolded. */
export function headerValues(raw: Buffer | string, name: string): string[] {
  return headerFields(raw)
    .filter((f) => f.name === name.toLowerCase())
    .map((f) => f.value);
}

/** The first value of a header, or undefined. */
export function header(raw: Buffer | string, name: string): string | undefined {
  return headerValues(raw, name)[0];
}

/** How many times each value of `key(message)` occurs among the ESP's messages. */
export function countBy(
  messages: EspMessage[],
  key: (m: EspMessage) => string | undefined,
): Map<string, number> {
  const counts = new Map<string, number>();
  for (const m of messages) {
    const k = key(m);
    if (k !== undefined) counts.set(k, (counts.get(k) ?? 0) + 1);
  }
  return counts;
}

/** A memory figure of a process from /proc/<pid>/status in bytes (VmRSS, VmHWM), or undefined. */
export async function procMemory(pid: number, field: 'VmRSS' | 'VmHWM'): Promise<number | undefined> {
  try {
    const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
    const match = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(status);
    return match ? Number(match[1]) * 1024 : undefined;
  } catch {
    return undefined;
  }
}

/** A plain SMTP conversation driven step by step (for things rawSmtpSession cannot interleave). */
export interface SmtpConversation {
  /** The greeting. */
  readonly greeting: string;
  /** Writes `line` + CRLF and resolves the complete reply (multi-line replies joined with '\n'). */
  command(line: string): Promise<string>;
  /** Writes raw bytes without waiting for a reply. */
  write(data: string): void;
  /** Resolves once the server has closed the connection. */
  readonly closed: Promise<void>;
  destroy(): void;
}

export async function openConversation(port: number, host = '127.0.0.1'): Promise<SmtpConversation> {
  const socket = net.connect({ host, port });
  socket.setEncoding('latin1');
  const replies: string[] = [];
  const waiting: ((reply: string) => void)[] = [];
  let buffer = '';
  let lines: string[] = [];
  socket.on('data', (chunk: string) => {
    buffer += chunk;
    for (let nl = buffer.indexOf('\r\n'); nl !== -1; nl = buffer.indexOf('\r\n')) {
      const line = buffer.slice(0, nl);
      buffer = buffer.slice(nl + 2);
      lines.push(line);
      if (/^\d{3}(?: |$)/.test(line)) {
        const reply = lines.join('\n');
        lines = [];
        const waiter = waiting.shift();
        if (waiter) waiter(reply);
        else replies.push(reply);
      }
    }
  });
  const closed = new Promise<void>((resolve) => socket.once('close', () => resolve()));
  socket.on('error', () => undefined);
  const next = (what: string) =>
    new Promise<string>((resolve, reject) => {
      const queued = replies.shift();
      if (queued !== undefined) return resolve(queued);
      const timer = setTimeout(() => reject(new Error(`no reply to ${what} within 15 s`)), 15_000);
      void closed.then(() => {
        clearTimeout(timer);
        reject(new Error(`connection closed while waiting for the reply to ${what}`));
      });
      waiting.push((reply) => {
        clearTimeout(timer);
        resolve(reply);
      });
    });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  const greeting = await next('the connection');
  return {
    greeting,
    command(line: string) {
      socket.write(`${line}\r\n`);
      return next(JSON.stringify(line.slice(0, 40)));
    },
    write: (data: string) => void socket.write(data),
    closed,
    destroy: () => socket.destroy(),
  };
}

/** Whether a TCP connection to host:port is refused (nothing listening). */
export function connectionRefused(port: number, host = '127.0.0.1'): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', (err: NodeJS.ErrnoException) => resolve(err.code === 'ECONNREFUSED'));
  });
}

/**
 * The relay's warnings and errors of the current run (deferrals left out), to put in a failure
 * message: when mail does not arrive, these usually say why.
 */
export function relayTrouble(relay: Relay, max = 15): string {
  const lines = relay
    .output()
    .slice(relay.runOffset)
    .split('\n')
    .filter((l) => /"level":"(warn|error)"/.test(l) && !/"event":"deferred"/.test(l));
  const shown = lines.slice(-max).map((l) => l.slice(0, 400));
  return shown.length ? `\nrelay warnings/errors (last ${shown.length}):\n${shown.join('\n')}` : '';
}

/** Runs `wait`; on failure, rethrows with the relay's recent warnings and errors appended. */
export async function explained<T>(relay: Relay, wait: Promise<T>): Promise<T> {
  try {
    return await wait;
  } catch (err) {
    throw new Error(`${(err as Error).message}${relayTrouble(relay)}`, { cause: err });
  }
}
