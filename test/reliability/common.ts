// Shared pieces of the reliability suite (npm run test:reliability): messages tagged with a
// unique token so what the ESP received can be matched against what the relay accepted,
// relay/ESP set-up, and spool inspection.
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { readTrailer } from '../../src/spool/one-file.js';
import { sendMail, type SendMailResult } from '../helpers/client.js';
import type { Esp, EspMessage } from '../helpers/esp.js';
import {
  filesIn,
  sleep,
  upstreamFor as baseUpstreamFor,
  waitUntil as baseWaitUntil,
} from '../e2e/relay-common.js';

export { filesIn, sleep };

export function token(prefix = 'm'): string {
  return `${prefix}-${randomBytes(6).toString('hex')}`;
}

/** A message whose Subject carries the token and whose last body line proves it arrived whole. */
export function taggedMessage(tok: string, bodyBytes = 2048): string {
  const line = 'The quick brown fox jumps over the lazy dog. 0123456789 abcdefghijklmnopqrstuvw\r\n';
  const body = line.repeat(Math.max(1, Math.ceil(bodyBytes / line.length)));
  return [
    'From: device@corp.test',
    'To: someone@example.com',
    `Subject: reliability ${tok}`,
    `Message-ID: <${tok}@corp.test>`,
    '',
    body + `END-OF-${tok}\r\n`,
  ].join('\r\n');
}

/** The token of a message the ESP received (from its Subject), if any. */
export function tokenOf(message: EspMessage): string | undefined {
  const text = message.raw.toString('latin1');
  return /^Subject: reliability (\S+)/m.exec(text)?.[1];
}

/** Whether the ESP's copy of a tagged message is complete (its end marker is there). */
export function isWhole(message: EspMessage): boolean {
  const tok = tokenOf(message);
  return tok !== undefined && message.raw.toString('latin1').includes(`END-OF-${tok}\r\n`);
}

export function sendTagged(
  port: number,
  tok: string,
  opts: { localAddress?: string; timeoutMs?: number; bodyBytes?: number } = {},
): Promise<SendMailResult> {
  return sendMail({
    port,
    from: 'device@corp.test',
    to: ['someone@example.com'],
    raw: taggedMessage(tok, opts.bodyBytes),
    ignoreTls: true,
    localAddress: opts.localAddress,
    timeoutMs: opts.timeoutMs ?? 10_000,
  });
}

/** The relay's `upstream:` block for the ESP stand-in, with short timeouts while it is down. */
export const upstreamFor = (esp: Esp): Record<string, unknown> => baseUpstreamFor(esp, { timeout: '5s' });

/** Polls until `check` is truthy (a wait, not a timing assertion); the suite waits up to 30 s by default. */
export const waitUntil = <T>(
  what: string | (() => string),
  check: () => T | Promise<T>,
  timeoutMs = 30_000,
  intervalMs = 50,
): Promise<NonNullable<T>> => baseWaitUntil(what, check, timeoutMs, intervalMs);

/**
 * Every queued message is whole: each <id>.json that holds an envelope has its <id>.eml of the
 * recorded size, and each <id>.msg alone ends with a whole envelope whose size is its body's.
 * Returns the ids. An empty or cut-short .json, or a .msg without a whole envelope, is not a
 * message (a reception the kill interrupted, never acknowledged): it is counted in `debris`,
 * which the relay sweeps.
 */
export async function checkSpoolConsistent(spoolDir: string): Promise<string[] & { debris: number }> {
  const queue = path.join(spoolDir, 'queue');
  const names = await filesIn(queue);
  const ids = names.filter((n) => n.endsWith('.json')).map((n) => n.slice(0, -5));
  const whole: string[] = [];
  let debris = 0;
  for (const name of names.filter((n) => n.endsWith('.msg'))) {
    const id = name.slice(0, -4);
    if (names.includes(`${id}.json`)) continue; // a split under way: the .json says
    const entry = await readTrailer(path.join(queue, name)).catch(() => undefined);
    if (entry) whole.push(id);
    else if (await fs.stat(path.join(queue, name)).catch(() => undefined)) debris++;
  }
  for (const id of ids) {
    const text = await fs.readFile(path.join(queue, `${id}.json`), 'utf8').catch(() => undefined);
    if (text === undefined) continue; // swept (or delivered) since the listing
    let entry: { size: number };
    try {
      entry = JSON.parse(text) as { size: number };
    } catch {
      debris++;
      continue;
    }
    const stat = await fs.stat(path.join(queue, `${id}.eml`)).catch(() => undefined);
    if (!stat && names.includes(`${id}.msg`)) {
      whole.push(id); // a split under way (or cut short: finished at start)
      continue;
    }
    if (!stat) {
      // Delivered and removed (.json first, then the body) while this looked: not a fault.
      const stillQueued = await fs.stat(path.join(queue, `${id}.json`)).catch(() => undefined);
      if (!stillQueued) continue;
      throw new Error(`queued message ${id} has no body`);
    }
    if (stat.size !== entry.size)
      throw new Error(`queued message ${id}: body is ${stat.size} bytes, the envelope says ${entry.size}`);
    whole.push(id);
  }
  return Object.assign(whole, { debris });
}
