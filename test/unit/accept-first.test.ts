// Acceptance first during a burst (src/queue/accept-first.ts): when a just-accepted message's
// first attempt waits, for how long at most, and that the messages held go as soon as the burst
// eases; then the same through the DeliveryQueue with a real spool.
import assert from 'node:assert/strict';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { Bouncer } from '../../src/bounce/bouncer.js';
import { parseConfig } from '../../src/config/load.js';
import type { Courier, RecipientResult } from '../../src/delivery/courier.js';
import { silentLogger } from '../../src/log.js';
import { AcceptFirst } from '../../src/queue/accept-first.js';
import { DeliveryQueue } from '../../src/queue/delivery-queue.js';
import { newQueueId } from '../../src/spool/entry.js';
import { Spool } from '../../src/spool/spool.js';
import { makeTempDir } from '../helpers/tmp.js';
import { waitUntil } from '../e2e/relay-common.js';

function gate(options: { load: number; maxWaitMs?: number }) {
  let clock = 1_000_000;
  const released: string[][] = [];
  const bursts: string[] = [];
  const state = { load: options.load, maxWaitMs: options.maxWaitMs ?? 10_000 };
  const first = new AcceptFirst({
    maxWaitMs: () => state.maxWaitMs,
    now: () => clock,
    loopLoad: () => state.load,
    release: (ids) => released.push(ids),
    onBurst: (s, held) => bursts.push(`${s} ${held}`),
  });
  const arrive = (id: string, stepMs = 1) => {
    clock += stepMs;
    return first.firstAttemptAt(id, clock) - clock;
  };
  return { first, arrive, released, bursts, state };
}

describe('AcceptFirst', () => {
  test('a burst on a busy relay: from the tenth message in 100 ms, first attempts wait up to the setting', () => {
    const g = gate({ load: 0.9, maxWaitMs: 10_000 });
    const waits = Array.from({ length: 12 }, (_, i) => g.arrive(`m${i}`));
    assert.deepEqual(waits, [0, 0, 0, 0, 0, 0, 0, 0, 0, 10_000, 10_000, 10_000]);
    assert.equal(g.first.holding, 3);
    assert.deepEqual(g.bursts, ['started 0']);
    g.first.stop();
  });

  test('fast arrivals on a relay with CPU to spare are delivered at once', () => {
    const g = gate({ load: 0.3 });
    const waits = Array.from({ length: 50 }, (_, i) => g.arrive(`m${i}`));
    assert.ok(waits.every((w) => w === 0));
    assert.equal(g.first.holding, 0);
  });

  test('a busy relay with messages arriving one by one (under 100 a second) holds none', () => {
    const g = gate({ load: 1 });
    const waits = Array.from({ length: 50 }, (_, i) => g.arrive(`m${i}`, 12));
    assert.ok(waits.every((w) => w === 0));
  });

  test('queue.acceptFirst 0 turns it off', () => {
    const g = gate({ load: 1, maxWaitMs: 0 });
    const waits = Array.from({ length: 50 }, (_, i) => g.arrive(`m${i}`));
    assert.ok(waits.every((w) => w === 0));
  });

  test('once the burst eases the messages still held are released together', async () => {
    const g = gate({ load: 0.9 });
    for (let i = 0; i < 15; i++) g.arrive(`m${i}`);
    g.first.done('m12'); // its attempt started (it had waited its longest)
    assert.equal(g.first.holding, 5);
    await new Promise((r) => setTimeout(r, 250));
    assert.deepEqual(g.released, [], 'still a burst: the arrivals are within the window (the clock stands)');
    g.state.load = 0.2;
    await waitUntil('the release', () => g.released.length > 0, 2_000);
    assert.deepEqual(g.released, [['m9', 'm10', 'm11', 'm13', 'm14']]);
    assert.deepEqual(g.bursts, ['started 0', 'ended 5']);
    assert.equal(g.first.holding, 0);
  });
  test('a burst that outlasts the wait: its messages went as they aged, and it ends once', async () => {
    const g = gate({ load: 0.9 });
    for (let i = 0; i < 12; i++) g.arrive(`m${i}`);
    for (const id of ['m9', 'm10', 'm11']) g.first.done(id); // each attempt started at its limit
    g.arrive('m12');
    assert.deepEqual(g.bursts, ['started 0'], 'one burst, though nothing was held for a moment');
    g.state.load = 0.1;
    await waitUntil('the end of the burst', () => g.bursts.length === 2, 2_000);
    assert.deepEqual(g.bursts, ['started 0', 'ended 1']);
    assert.deepEqual(g.released, [['m12']]);
  });

  test('a reload that sets queue.acceptFirst to 0 releases what is held, burst or not', async () => {
    const g = gate({ load: 0.9 });
    for (let i = 0; i < 12; i++) g.arrive(`m${i}`);
    assert.equal(g.first.holding, 3);
    g.state.maxWaitMs = 0;
    await waitUntil('the release', () => g.released.length > 0, 2_000);
    assert.deepEqual(g.released, [['m9', 'm10', 'm11']]);
  });
});

class CountingCourier implements Courier {
  readonly description = 'counting';
  readonly sent: string[] = [];
  async send(entry: { id: string }, recipients: string[]): Promise<RecipientResult[]> {
    this.sent.push(entry.id);
    return recipients.map((recipient) => ({ recipient, outcome: 'delivered', reply: '250 ok' }));
  }
  async close(): Promise<void> {}
}

async function queueWith(loopLoad: number) {
  const dir = await makeTempDir('accept-first');
  const config = parseConfig(
    { hostname: 'relay.test', queue: { acceptFirst: '60s' } },
    { env: {}, baseDir: dir, source: 'test' },
  );
  const spool = new Spool(path.join(dir, 'data'));
  await spool.init();
  const courier = new CountingCourier();
  const log = silentLogger();
  const dq = new DeliveryQueue({
    spool,
    courier: () => courier,
    bouncer: new Bouncer(spool, () => config, log),
    log,
    config: () => config,
    loopLoad: () => loopLoad,
  });
  await dq.start();
  /** Accepts `count` messages into the spool, then hands them to the queue as the listener does. */
  const burst = async (count: number) => {
    const items = [];
    for (let i = 0; i < count; i++) {
      const now = Date.now();
      const entry = await spool.accept(Readable.from([Buffer.from('Subject: t\r\n\r\nbody\r\n')]), {
        id: newQueueId(),
        from: 'alerts@corp.example',
        originalFrom: 'alerts@corp.example',
        recipients: [{ address: 'ops@example.com', status: 'pending' as const }],
        source: 'test',
        client: { address: '127.0.0.1' },
        createdAt: now,
        attempts: 0,
        nextAttemptAt: now,
      });
      items.push(entry);
    }
    for (const entry of items) dq.enqueue({ entry });
    return items.map((e) => e.id);
  };
  return { dq, spool, courier, burst };
}

describe('DeliveryQueue with acceptance first', () => {
  test('a burst on a busy relay is delivered in one go once it eases, long before queue.acceptFirst', async () => {
    const q = await queueWith(1);
    const ids = await q.burst(40);
    const sentDuringBurst = q.courier.sent.length;
    assert.ok(sentDuringBurst < 40, `held during the burst (${sentDuringBurst} of 40 went at once)`);
    await waitUntil('every message sent', () => q.courier.sent.length === 40, 5_000);
    assert.deepEqual([...q.courier.sent].sort(), [...ids].sort(), 'every message once');
    await waitUntil('an empty spool', async () => (await q.spool.list()).length === 0, 5_000);
    await q.dq.stop();
  });

  test('the same burst on a relay with CPU to spare goes at once', async () => {
    const q = await queueWith(0);
    await q.burst(40);
    await new Promise((resolve) => setImmediate(resolve));
    assert.ok(
      q.courier.sent.length >= 20,
      `as many at once as queue.concurrency allows (${q.courier.sent.length})`,
    );
    await waitUntil('every message sent', () => q.courier.sent.length === 40, 5_000);
    await q.dq.stop();
  });

  test('a message held when the queue stops stays in the spool for the next start', async () => {
    const q = await queueWith(1);
    const ids = await q.burst(20);
    await q.dq.stop();
    const left = await q.spool.list();
    assert.ok(left.length > 0, 'some were held');
    assert.ok(left.every((id) => ids.includes(id)));
    assert.equal(q.courier.sent.length + left.length, 20, 'each either sent or still queued');
  });
});
