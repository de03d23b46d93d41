// The traffic counters behind `smarthost stats`: windows, ordering, and bounded memory.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { OTHER_SOURCES, TrafficStats, statsHandler } from '../../src/stats/traffic.js';
import { ControlRefusal } from '../../src/control/protocol.js';

const MIN = 60_000;

function clock(start = Date.UTC(2026, 0, 1, 12, 0, 0)) {
  let now = start;
  return { now: () => now, advance: (ms: number) => (now += ms) };
}

test('top sources by messages, refusals and rate-limit hits', () => {
  const c = clock();
  const t = new TrafficStats({ now: c.now });
  for (let i = 0; i < 5; i++) t.accepted('scanner', 2, 1000);
  t.accepted('printers', 1, 500);
  t.refused('rate_limit', '10.0.0.5', 'printers');
  t.refused('recipient_rate_limit', '10.0.0.5', 'printers');
  t.refused('not_allowed', '192.0.2.1');
  t.refused('not_allowed', '192.0.2.1');
  t.refused('not_allowed', '192.0.2.1');
  const r = t.report(60 * MIN);
  assert.deepEqual(
    r.top.messages.map((x) => [x.source, x.messages, x.recipients, x.bytes]),
    [
      ['scanner', 5, 10, 5000],
      ['printers', 1, 1, 500],
    ],
  );
  assert.deepEqual(
    r.top.refusals.map((x) => [x.source, x.unknown, x.refused]),
    [
      ['192.0.2.1', true, 3],
      ['printers', false, 2],
    ],
  );
  assert.deepEqual(
    r.top.rateLimited.map((x) => [x.source, x.rateLimited]),
    [['printers', 2]],
  );
  assert.deepEqual(r.top.refusals[1]?.reasons, { rate_limit: 1, recipient_rate_limit: 1 });
  assert.deepEqual(r.totals, { messages: 6, recipients: 11, bytes: 5500, refused: 5, rateLimited: 2 });
  assert.equal(r.sources, 3);
});

test('the window: --since counts only the last minutes, and 24 h are kept', () => {
  const c = clock();
  const t = new TrafficStats({ now: c.now });
  t.accepted('old', 1, 1);
  c.advance(2 * 60 * MIN);
  t.accepted('recent', 1, 1);
  assert.deepEqual(
    t.report(60 * MIN).top.messages.map((x) => x.source),
    ['recent'],
  );
  assert.deepEqual(
    t.report(3 * 60 * MIN).top.messages.map((x) => x.source),
    ['old', 'recent'],
  );
  c.advance(23 * 60 * MIN);
  t.accepted('recent', 1, 1); // a new minute prunes what is older than 24 h
  const day = t.report(48 * 60 * MIN);
  assert.equal(day.minutes, 1440);
  assert.deepEqual(
    day.top.messages.map((x) => [x.source, x.messages]),
    [['recent', 2]],
  );
});

test('memory is bounded: past the per-minute cap sources are added up as "(other)"', () => {
  const c = clock();
  const t = new TrafficStats({ now: c.now, maxKeysPerMinute: 3 });
  for (let i = 0; i < 10; i++) t.refused('not_allowed', `192.0.2.${i}`);
  const r = t.report(MIN, 100);
  assert.equal(r.sources, 4, 'three sources and "(other)"');
  const other = r.top.refusals.find((x) => x.source === OTHER_SOURCES);
  assert.equal(other?.refused, 7);
  assert.equal(r.totals.refused, 10);
});

test('the control handler parses --since and refuses nonsense', async () => {
  const t = new TrafficStats();
  t.accepted('a', 1, 1);
  const handler = statsHandler(t);
  const r = await handler({ since: '15m', limit: 1 });
  assert.equal(r.minutes, 15);
  assert.equal((await handler({})).minutes, 60);
  await assert.rejects(handler({ since: 'yesterday' }), ControlRefusal);
});
