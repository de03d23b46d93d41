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
 *
 * The relay may be running: a message's first failed attempt splits it while this looks (its
 * .json written, then its .msg cut back to the body and renamed .eml), and a delivery removes
 * it. So each id is judged from its own files, read again when they changed under the look; a
 * listing taken before a split must not turn a queued message into debris or into nothing.
 */
export async function checkSpoolConsistent(spoolDir: string): Promise<string[] & { debris: number }> {
  const queue = path.join(spoolDir, 'queue');
  const ids = new Set(
    (await filesIn(queue)).flatMap((name) => {
      const match = /^(.+)\.(json|msg)$/.exec(name);
      return match?.[1] ? [match[1]] : [];
    }),
  );
  const whole: string[] = [];
  let debris = 0;
  for (const id of ids) {
    const state = await messageState(queue, id);
    if (state === 'whole') whole.push(id);
    else if (state === 'debris') debris++;
  }
  return Object.assign(whole, { debris });
}

type FileState = 'whole' | 'debris' | 'gone';

async function messageState(queue: string, id: string): Promise<FileState> {
  for (let look = 1; ; look++) {
    const state = await lookAt(queue, id);
    if (typeof state === 'string') return state;
    if (look === 20) throw new Error(`queued message ${id}: ${state.changed}`);
    await sleep(25);
  }
}

/** One look at a message's files; `changed` when they moved under it (look again). */
async function lookAt(queue: string, id: string): Promise<FileState | { changed: string }> {
  const file = (ext: string): string => path.join(queue, `${id}.${ext}`);
  const exists = (ext: string): Promise<boolean> =>
    fs.stat(file(ext)).then(
      () => true,
      () => false,
    );
  const text = await fs.readFile(file('json'), 'utf8').catch(() => undefined);
  if (text === undefined) {
    if (await readTrailer(file('msg')).catch(() => undefined)) return 'whole';
    // The .json is written before the .msg is cut back: one there now means a split began.
    if (await exists('json')) return { changed: 'split while looked at' };
    return (await exists('msg')) ? 'debris' : 'gone'; // gone: delivered and removed
  }
  let entry: { size: number };
  try {
    entry = JSON.parse(text) as { size: number };
  } catch {
    return 'debris';
  }
  const body = await fs.stat(file('eml')).catch(() => undefined);
  if (body) {
    // An .eml is only ever a body cut back and fsynced before its rename: its size is final.
    if (body.size !== entry.size)
      throw new Error(`queued message ${id}: body is ${body.size} bytes, the envelope says ${entry.size}`);
    return 'whole';
  }
  if (await exists('msg')) return 'whole'; // a split under way (or cut short: finished at start)
  // Neither body: removed after delivery (the .json goes first), or renamed between the looks.
  return (await exists('json')) ? { changed: 'has no body' } : 'gone';
}
