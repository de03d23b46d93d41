// The operators' metrics (src/metrics-ops.ts) on their own: upstream up/down from the
// courier's events (and only the current courier's after a reload), throttling, refusals by
// reason present from the start, the delay from acceptance to delivery, the queue's bytes and
// the dead letters read from a real spool, held messages, and the version.
import assert from 'node:assert/strict';
import { EventEmitter } from 'node:events';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, test } from 'node:test';
import { Registry } from 'prom-client';
import type { Courier } from '../../src/delivery/courier.js';
import { REFUSAL_REASON_NAMES } from '../../src/events.js';
import { OpsMetrics, packageVersion } from '../../src/metrics-ops.js';
import type { DeliveryQueue } from '../../src/queue/delivery-queue.js';
import { newQueueId, type QueueEntry } from '../../src/spool/entry.js';
import { Spool } from '../../src/spool/spool.js';
import { makeTempDirSync } from '../helpers/tmp.js';
import { metricValue } from '../e2e/ops-common.js';

const dir = makeTempDirSync('smarthost-ops-metrics');
after(() => fs.rm(dir, { recursive: true, force: true }));

function fakeQueue(): DeliveryQueue {
  return new EventEmitter() as unknown as DeliveryQueue;
}

/** A courier that emits 'upstream' events as ThreadedCourier does. */
function fakeCourier(): Courier & EventEmitter {
  return Object.assign(new EventEmitter(), {
    description: 'fake',
    send: async () => [],
    close: async () => undefined,
  });
}

function setup(spool = new Spool(path.join(dir, 'unused'))) {
  const registry = new Registry();
  const queue = fakeQueue();
  const ops = new OpsMetrics(registry, { spool, queue, version: '9.8.7' });
  return { registry, queue, ops, scrape: () => registry.metrics() };
}

test('upstream up: 1 at start, 0 on down, 1 on up; a swapped-out courier no longer counts', async () => {
  const { ops, scrape } = setup();
  const first = fakeCourier();
  ops.useCourier(first, ['primary', 'backup']);
  let text = await scrape();
  assert.equal(metricValue(text, 'smarthost_upstream_up', { upstream: 'primary' }), 1);
  assert.equal(metricValue(text, 'smarthost_upstream_up', { upstream: 'backup' }), 1);

  first.emit('upstream', { upstream: 'primary', state: 'down', reason: 'ECONNREFUSED', downForMs: 1000 });
  first.emit('upstream', { upstream: 'backup', state: 'throttled', reason: '421 slow down', pace: '5/1m' });
  text = await scrape();
  assert.equal(metricValue(text, 'smarthost_upstream_up', { upstream: 'primary' }), 0);
  assert.equal(metricValue(text, 'smarthost_upstream_up', { upstream: 'backup' }), 1);
  assert.equal(metricValue(text, 'smarthost_upstream_throttled_total', { upstream: 'backup' }), 1);

  first.emit('upstream', { upstream: 'primary', state: 'up' });
  text = await scrape();
  assert.equal(metricValue(text, 'smarthost_upstream_up', { upstream: 'primary' }), 1);

  // A reload: new names, and the old courier's late events are ignored.
  const second = fakeCourier();
  ops.useCourier(second, ['esp']);
  first.emit('upstream', { upstream: 'primary', state: 'down', reason: 'late' });
  second.emit('upstream', { upstream: 'esp', state: 'down', reason: 'EHOSTUNREACH' });
  text = await scrape();
  assert.equal(metricValue(text, 'smarthost_upstream_up', { upstream: 'primary' }), undefined);
  assert.equal(metricValue(text, 'smarthost_upstream_up', { upstream: 'esp' }), 0);
});

test('capture mode: upstream "outbox" is up (a courier without events)', async () => {
  const { ops, scrape } = setup();
  ops.useCourier({ description: 'outbox', send: async () => [], close: async () => undefined }, []);
  assert.equal(metricValue(await scrape(), 'smarthost_upstream_up', { upstream: 'outbox' }), 1);
});

test('refusals: every reason present at 0 from the start, counted by reason', async () => {
  const { ops, scrape } = setup();
  let text = await scrape();
  for (const reason of REFUSAL_REASON_NAMES) {
    assert.equal(metricValue(text, 'smarthost_refusals_total', { reason }), 0, reason);
  }
  ops.refused('not_allowed');
  ops.refused('not_allowed');
  ops.refused('max_connections');
  text = await scrape();
  assert.equal(metricValue(text, 'smarthost_refusals_total', { reason: 'not_allowed' }), 2);
  assert.equal(metricValue(text, 'smarthost_refusals_total', { reason: 'max_connections' }), 1);
  assert.equal(metricValue(text, 'smarthost_refusals_total'), 3);
});

test('delivery latency: from acceptance to delivery, once per message and upstream that delivered', async () => {
  const { queue, scrape } = setup();
  const entry = { id: newQueueId(), createdAt: Date.now() - 90_000, size: 10 } as QueueEntry;
  queue.emit('attempt', {
    entry,
    results: [
      { recipient: 'a@example.com', outcome: 'delivered', reply: '250', upstream: 'esp' },
      { recipient: 'b@example.com', outcome: 'delivered', reply: '250', upstream: 'esp' },
      { recipient: 'c@example.com', outcome: 'temporary', reply: '451', upstream: 'backup' },
    ],
    durationMs: 20,
  });
  const text = await scrape();
  assert.equal(metricValue(text, 'smarthost_delivery_latency_seconds_count', { upstream: 'esp' }), 1);
  assert.equal(
    metricValue(text, 'smarthost_delivery_latency_seconds_count', { upstream: 'backup' }),
    undefined,
  );
  const sum = metricValue(text, 'smarthost_delivery_latency_seconds_sum', { upstream: 'esp' }) ?? 0;
  assert.ok(sum >= 90 && sum < 100, `about 90 s, got ${sum}`);
  assert.equal(
    metricValue(text, 'smarthost_delivery_latency_seconds_bucket', { upstream: 'esp', le: '60' }),
    0,
  );
  assert.equal(
    metricValue(text, 'smarthost_delivery_latency_seconds_bucket', { upstream: 'esp', le: '300' }),
    1,
  );
});

test('queue bytes, dead letters and held messages are read from the spool', async () => {
  const spool = new Spool(path.join(dir, 'spool'));
  await spool.init();
  const { scrape } = setup(spool);
  let text = await scrape();
  assert.equal(metricValue(text, 'smarthost_queue_bytes'), 0);
  assert.equal(metricValue(text, 'smarthost_dead_letters'), 0);
  assert.equal(metricValue(text, 'smarthost_queue_held'), 0);

  // A fresh OpsMetrics (the first one keeps its scan for a few seconds) sees two queued bodies
  // and one dead letter.
  for (const [id, size] of [
    [newQueueId(), 1000],
    [newQueueId(), 234],
  ] as const) {
    await fs.writeFile(path.join(spool.queueDir, `${id}.json`), '{}');
    await fs.writeFile(spool.bodyPath(id), 'x'.repeat(size));
  }
  await fs.writeFile(path.join(spool.failedDir, `${newQueueId()}.json`), '{}');
  await fs.writeFile(path.join(spool.failedDir, 'notes.txt'), 'not a dead letter');
  await fs.mkdir(spool.held.holdDir, { recursive: true });
  for (let i = 0; i < 4; i++) await fs.writeFile(path.join(spool.held.holdDir, `${newQueueId()}.json`), '{}');
  const again = setup(spool);
  text = await again.scrape();
  assert.equal(metricValue(text, 'smarthost_queue_bytes'), 1234);
  assert.equal(metricValue(text, 'smarthost_dead_letters'), 1);
  assert.equal(metricValue(await scrape(), 'smarthost_queue_held'), 4);
});

test('build info carries the version; by default the one in package.json', async () => {
  const { scrape } = setup();
  assert.equal(metricValue(await scrape(), 'smarthost_build_info', { version: '9.8.7' }), 1);
  const pkg = JSON.parse(await fs.readFile(new URL('../../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  assert.equal(packageVersion(), pkg.version);
});
