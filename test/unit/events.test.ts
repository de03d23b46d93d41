// The one vocabulary of events and refusal reasons (src/events.ts): the README documents
// exactly those names (its "Logs" table and reason list), at the levels the code says, and
// every metric the README's metrics table lists is one the relay registers (and back). The
// type-level check (a misspelt event does not build) is the @ts-expect-error below.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import {
  EVENT_NAMES,
  EVENTS,
  isConnectionReason,
  isRateLimitReason,
  REFUSAL_REASON_NAMES,
  reasonSpec,
} from '../../src/events.js';
import { silentLogger, type Logger } from '../../src/log.js';
import { Metrics } from '../../src/metrics.js';
import type { DeliveryQueue } from '../../src/queue/delivery-queue.js';
import type { Spool } from '../../src/spool/spool.js';
import { smtpErrors } from '../../src/smtp/errors.js';
import { Cluster } from '../../src/cluster/cluster.js';
import { parseConfig } from '../../src/config/load.js';

const README = readFileSync(path.resolve(import.meta.dirname, '../../../README.md'), 'utf8');

/** The rows of the markdown table whose header line starts with `header`, as cells. */
function tableRows(header: string): string[][] {
  const lines = README.split('\n');
  const start = lines.findIndex((l) => l.startsWith(header));
  assert.ok(start >= 0, `README has no table starting with ${header}`);
  const rows: string[][] = [];
  for (const line of lines.slice(start + 2)) {
    if (!line.startsWith('|')) break;
    rows.push(
      line
        .slice(1, -1)
        .split(' | ')
        .map((c) => c.trim()),
    );
  }
  return rows;
}

const backticked = (text: string) => [...text.matchAll(/`([^`]+)`/g)].map((m) => m[1]!);

function duplicates(names: string[]): string[] {
  return names.filter((n, i) => names.indexOf(n) !== i);
}

test('a misspelt or unlisted event name does not type-check', () => {
  const log: Logger = silentLogger();
  log.info('fine', { event: 'accepted', id: 'x' });
  // @ts-expect-error: not an event of events.ts
  log.info('typo', { event: 'acepted' });
  // @ts-expect-error: every log line names its event
  log.warn('no event', { id: 'x' });
});

test("every event is in README's log events table, at its levels, and the table names no other", () => {
  const rows = tableRows('| `event` | Level |');
  const documented = new Map<string, string[]>();
  for (const [names = '', levels = ''] of rows) {
    for (const name of backticked(names)) documented.set(name, levels.split('/'));
  }
  assert.deepEqual(duplicates(rows.flatMap(([names = '']) => backticked(names))), []);
  const missing = EVENT_NAMES.filter((e) => !documented.has(e));
  assert.deepEqual(missing, [], 'events missing from the README table (add a row or a name to one)');
  const unknown = [...documented.keys()].filter((n) => !(EVENT_NAMES as string[]).includes(n));
  assert.deepEqual(unknown, [], 'names in the README table that are not events in src/events.ts');
  for (const name of EVENT_NAMES) {
    const spec = EVENTS[name];
    const levels: readonly string[] = typeof spec.level === 'string' ? [spec.level] : spec.level;
    for (const level of levels) {
      assert.ok(
        documented.get(name)?.includes(level),
        `${name} is logged at ${level}: the README row says ${documented.get(name)?.join('/')}`,
      );
    }
  }
});

test('every refusal reason is in the README list, and the list names no other', () => {
  const start = README.indexOf('Refusal `reason`s:');
  assert.ok(start >= 0);
  const paragraph = README.slice(start, README.indexOf('\n\n', start));
  const listed = backticked(paragraph).filter((n) => n !== 'reason');
  assert.deepEqual(duplicates(listed), []);
  assert.deepEqual([...listed].sort(), [...REFUSAL_REASON_NAMES].sort());
});

test('reasons carry their stage and rate-limit flag (no decoding of the name)', () => {
  assert.equal(isConnectionReason('max_connections'), true);
  assert.equal(isConnectionReason('shutdown'), true);
  assert.equal(isConnectionReason('auth_lockout'), false, 'counted with the command refusals');
  assert.equal(isRateLimitReason('rate_limit'), true);
  assert.equal(isRateLimitReason('recipient_rate_limit'), true);
  assert.equal(isRateLimitReason('recipients'), false);
  assert.equal(reasonSpec('no_such_reason'), reasonSpec('refused'), 'an unknown name reads as "refused"');
  // The refusals the relay builds carry reasons of the list.
  for (const err of [smtpErrors.notAllowed('10.0.0.1'), smtpErrors.diskFull(), smtpErrors.authFailed()]) {
    assert.ok(REFUSAL_REASON_NAMES.includes(err.reason), err.reason);
  }
});

test("the README's metrics table lists exactly the smarthost_* metrics the relay registers", async () => {
  const spool = {
    dir: '/nonexistent',
    queueDir: '/nonexistent',
    isWritable: async () => false,
    oldestAgeMs: async () => 0,
  } as unknown as Spool;
  const queue = Object.assign(new EventEmitter(), { depth: 0, active: 0 }) as unknown as DeliveryQueue;
  const metrics = new Metrics({
    spool,
    queue,
    log: silentLogger(),
    listeners: () => [],
    isShuttingDown: () => false,
  });
  // Cluster mode's metrics are registered by the relay only with `cluster:` (never started here).
  const config = parseConfig(
    { cluster: { redis: 'redis://127.0.0.1:6379/0' } },
    { env: {}, baseDir: '/tmp', source: 'test' },
  );
  new Cluster(config.cluster!, silentLogger(), { queued: () => 0 }).registerMetrics(metrics.registry);
  const registered = (await metrics.registry.getMetricsAsJSON()).map((m) => m.name).sort();
  const documented = tableRows('| Metric | Type |')
    .flatMap(([name = '']) => backticked(name))
    .filter((n) => n.startsWith('smarthost_'))
    .sort();
  assert.deepEqual(documented, registered);
});
