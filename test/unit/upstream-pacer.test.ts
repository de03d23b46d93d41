// The pacer (src/upstream/pacer.ts) on a fake clock: never more than `count` answered sends in
// any window of `perMs`, in-flight sends hold their slot, unreached sends give it back, a
// throttling reply halves the pace for a while, and shutdown releases the waiters.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseRate } from '../../src/config/units.js';
import { Pacer, PacingAborted, type PaceSlot } from '../../src/upstream/pacer.js';
import { FakeClock, flush } from './upstream-fake-clock.js';

function rate(text: string) {
  const parsed = parseRate(text);
  assert.ok(parsed, text);
  return parsed;
}

/** Starts `n` acquires and records when each got its slot. */
function acquireAll(pacer: Pacer, clock: FakeClock, n: number) {
  const got: { at: number; slot: PaceSlot }[] = [];
  const all = Array.from({ length: n }, (_, i) =>
    pacer.acquire().then((slot) => {
      got[i] = { at: clock.now(), slot };
    }),
  );
  return { got, all };
}

/** The largest number of times in any half-open window [t, t + windowMs). */
function maxInWindow(times: number[], windowMs: number): number {
  const sorted = [...times].sort((a, b) => a - b);
  let best = 0;
  for (let i = 0, j = 0; i < sorted.length; i++) {
    while (sorted[j]! < sorted[i]! - windowMs + 1) j++;
    best = Math.max(best, i - j + 1);
  }
  return best;
}

describe('pacer', () => {
  test('unpaced: every acquire is granted at once', async () => {
    const clock = new FakeClock();
    const pacer = new Pacer(undefined, clock);
    const { got, all } = acquireAll(pacer, clock, 50);
    await flush();
    await Promise.all(all);
    assert.equal(got.length, 50);
    assert.ok(got.every((g) => g.at === got[0]!.at));
  });

  test('3/s: the fourth waits until the first answer is a second old', async () => {
    const clock = new FakeClock();
    const pacer = new Pacer(rate('3/s'), clock);
    const start = clock.now();
    const { got } = acquireAll(pacer, clock, 4);
    await flush();
    assert.equal(got.filter(Boolean).length, 3, 'three slots at once');
    assert.equal(pacer.delay(), undefined, 'window full of sends in flight: waits for an answer');
    await clock.advance(200);
    got[0]!.slot.finish(true); // answered at start + 200
    got[1]!.slot.finish(true);
    got[2]!.slot.finish(true);
    await flush();
    const granted = () => got.filter(Boolean).length;
    assert.equal(granted(), 3, 'still three answered within the last second');
    await clock.advance(999);
    assert.equal(granted(), 3);
    await clock.advance(1);
    assert.equal(granted(), 4);
    assert.equal(got[3]!.at, start + 1200, 'granted exactly when the first answer left the window');
  });

  test('a send that never reached the ESP gives its slot back', async () => {
    const clock = new FakeClock();
    const pacer = new Pacer(rate('1/min'), clock);
    const { got } = acquireAll(pacer, clock, 2);
    await flush();
    assert.equal(got.filter(Boolean).length, 1);
    got[0]!.slot.finish(false);
    await flush();
    assert.ok(got[1], 'the second went at once');
    got[1]!.slot.finish(true);
    assert.ok(pacer.delay()! > 59_000, 'an answered send holds the window');
  });

  test('200 messages at 60/min: never more than 60 answered in any minute, in order', async () => {
    const clock = new FakeClock();
    const pacer = new Pacer(rate('60/min'), clock);
    const answeredAt: number[] = [];
    const order: number[] = [];
    const all = Array.from({ length: 200 }, (_, i) =>
      pacer.acquire().then((slot) => {
        order.push(i);
        // The ESP answers a moment later.
        setImmediate(() => {
          answeredAt.push(clock.now());
          slot.finish(true);
        });
      }),
    );
    for (let step = 0; step < 400 && answeredAt.length < 200; step++) await clock.advance(1000);
    await Promise.all(all);
    assert.equal(answeredAt.length, 200);
    assert.deepEqual(
      order,
      Array.from({ length: 200 }, (_, i) => i),
      'first come, first served',
    );
    assert.equal(maxInWindow(answeredAt, 60_000), 60);
    const span = Math.max(...answeredAt) - Math.min(...answeredAt);
    assert.ok(span >= 3 * 60_000, `200 at 60/min take at least three more minutes (took ${span} ms)`);
  });

  test('a throttling reply halves the pace for a while, then it recovers', async () => {
    const clock = new FakeClock();
    const pacer = new Pacer(rate('10/s'), clock, 60_000);
    assert.equal(pacer.limit(), 10);
    assert.deepEqual(pacer.slowDown(), { count: 5, perMs: 1000 });
    assert.equal(pacer.limit(), 5);
    assert.ok(pacer.slowed());
    // More replies to sends made at the old pace: not halved again within the same window.
    await clock.advance(10);
    assert.deepEqual(pacer.slowDown(), { count: 5, perMs: 1000 });
    await clock.advance(1000);
    assert.deepEqual(pacer.slowDown(), { count: 2, perMs: 1000 }, 'still throttled a window later');
    await clock.advance(1000);
    assert.equal(pacer.slowDown().count, 2, 'never below an eighth of the pace it started from (10/8 → 2)');
    await clock.advance(1000);
    assert.equal(pacer.slowDown().count, 2);
    await clock.advance(60_000);
    assert.equal(pacer.limit(), 10, 'back to the configured pace');
    assert.ok(!pacer.slowed());
  });

  test('unpaced: a throttling reply imposes half of the last minute’s sends per minute', async () => {
    const clock = new FakeClock();
    const pacer = new Pacer(undefined, clock, 120_000);
    const { got, all } = acquireAll(pacer, clock, 40);
    await Promise.all(all);
    for (const g of got) g.slot.finish(true);
    assert.deepEqual(pacer.slowDown(), { count: 20, perMs: 60_000 });
    const more = acquireAll(pacer, clock, 1);
    await flush();
    assert.equal(more.got.length, 0, 'forty answered in the last minute, twenty allowed: waits');
    await clock.advance(60_000);
    assert.equal(more.got.length, 1);
    await clock.advance(120_000);
    assert.equal(pacer.limit(), Infinity, 'unpaced again');
  });

  test('abort (shutdown) rejects the waiters and later acquires', async () => {
    const clock = new FakeClock();
    const pacer = new Pacer(rate('1/min'), clock);
    const first = await pacer.acquire();
    first.finish(true);
    const waiting = pacer.acquire();
    await flush();
    assert.equal(pacer.waiting, 1);
    pacer.abort();
    await assert.rejects(waiting, PacingAborted);
    await assert.rejects(pacer.acquire(), PacingAborted);
    assert.equal(clock.pendingTimers, 0, 'no timer left behind');
  });
});
