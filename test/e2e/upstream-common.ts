// Shared pieces of the upstream end-to-end tests (test/e2e/upstream-*.test.ts): the relay's
// JSON log lines as objects, and the largest number of messages an ESP saw in any window.
import type { Relay } from '../helpers/relay.js';

export type LogLine = Record<string, unknown> & { message?: string; event?: string; id?: string };

/** Every JSON log line the relay wrote so far (other output is skipped). */
export function logLines(relay: Relay): LogLine[] {
  const lines: LogLine[] = [];
  for (const line of relay.output().split('\n')) {
    if (!line.startsWith('{')) continue;
    try {
      lines.push(JSON.parse(line) as LogLine);
    } catch {
      // a partial line still being written
    }
  }
  return lines;
}

/** The log lines of one event, optionally for one queue id. */
export function events(relay: Relay, event: string, id?: string): LogLine[] {
  return logLines(relay).filter((l) => l.event === event && (id === undefined || l.id === id));
}

/** The largest number of `times` in any half-open window [t, t + windowMs). */
export function maxInWindow(times: number[], windowMs: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let best = 0;
  for (let i = 0, j = 0; i < sorted.length; i++) {
    while (sorted[j]! <= sorted[i]! - windowMs) j++;
    best = Math.max(best, i - j + 1);
  }
  return best;
}
