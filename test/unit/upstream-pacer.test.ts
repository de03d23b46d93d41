// The pacer (src/upstream/pacer.ts) on a fake clock: never more than `count` answered sends in
// any window of `perMs`, starts spaced evenly (30/min: one every 2 s), in-flight sends hold their
// slot, unreached sends give it back, a throttling reply slows the pace and clean replies bring
// it back step by step, and shutdown releases the waiters.
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

  test('3/s, burst 3: the fourth waits until the first answer is a second old', async () => {
    const clock = new FakeClock();
    const pacer = new Pacer(rate('3/s'), clock, { burst: 3 });
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

  test('30/min with 20 queued: one every 2 s, at most 2 in any second, never 30 in a minute', async () => {
    const clock = new FakeClock();
    const pacer = new Pacer(rate('30/min'), clock);
    const startedAt: number[] = [];
    const all = Array.from({ length: 20 }, () =>
      pacer.acquire().then((slot) => {
        startedAt.push(clock.now());
        setImmediate(() => slot.finish(true));
      }),
    );
    for (let step = 0; step < 100 && startedAt.length < 20; step++) await clock.advance(500);
    await Promise.all(all);
    assert.equal(startedAt.length, 20);
    for (let i = 1; i < startedAt.length; i++) {
      assert.equal(startedAt[i]! - startedAt[i - 1]!, 2000, `start ${i} two seconds after the one before`);
    }
    assert.ok(maxInWindow(startedAt, 1000) <= 2);
    assert.ok(maxInWindow(startedAt, 60_000) <= 30);
  });

  test('30/min: the default burst (1), or 2, keeps it to 2 in any second; 3 would not', async () => {
    for (const [burst, most] of [
      [undefined, 1],
      [2, 2],
      [3, 3],
    ] as const) {
      const clock = new FakeClock();
      const pacer = new Pacer(rate('30/min'), clock, burst === undefined ? {} : { burst });
      const startedAt: number[] = [];
      const all = Array.from({ length: 20 }, () =>
        pacer.acquire().then((slot) => {
          startedAt.push(clock.now());
          setImmediate(() => slot.finish(true));
        }),
      );
      for (let step = 0; step < 200 && startedAt.length < 20; step++) await clock.advance(250);
      await Promise.all(all);
      assert.equal(maxInWindow(startedAt, 1000), most, `burst ${burst ?? 'default'}`);
      assert.ok(maxInWindow(startedAt, 60_000) <= 30);
    }
  });

  test('burst: that many start together, then the even pace', async () => {
    const clock = new FakeClock();
    const pacer = new Pacer(rate('60/min'), clock, { burst: 3 });
    const { got } = acquireAll(pacer, clock, 5);
    await flush();
    assert.equal(got.filter(Boolean).length, 3, 'the burst at once');
    await clock.advance(999);
    assert.equal(got.filter(Boolean).length, 3);
    await clock.advance(1);
    assert.equal(got.filter(Boolean).length, 4, 'then one a second');
    await clock.advance(1000);
    assert.equal(got.filter(Boolean).length, 5);
  });

  test('a throttling reply doubles the interval, once per settling time, down to an eighth', async () => {
    const clock = new FakeClock();
    const pacer = new Pacer(rate('10/s'), clock, { recoverStepMs: 30_000 });
    assert.equal(pacer.limit(), 10);
    assert.equal(pacer.interval(), 100);
    assert.deepEqual(pacer.slowDown(), { count: 5, perMs: 1000 });
    assert.equal(pacer.interval(), 200);
    assert.ok(pacer.slowed());
    // More replies to sends made at the old pace: not slowed again within the settling time.
    await clock.advance(10);
    assert.deepEqual(pacer.slowDown(), { count: 5, perMs: 1000 });
    await clock.advance(1000);
    assert.equal(pacer.slowDown().count, 2.5, 'still throttled a second later');
    await clock.advance(1000);
    assert.equal(pacer.slowDown().count, 1.25);
    await clock.advance(10_000);
    assert.equal(pacer.slowDown().count, 1.25, 'never below an eighth of the configured pace');
  });

  test('clean replies bring the pace back step by step; a message’s own 4xx is clean', async () => {
    const clock = new FakeClock();
    const pacer = new Pacer(rate('8/s'), clock, { recoverStepMs: 30_000 });
    pacer.slowDown();
    await clock.advance(1000);
    pacer.slowDown();
    await clock.advance(1000);
    pacer.slowDown();
    assert.equal(pacer.limit(), 1, 'an eighth');
    await clock.advance(10_000);
    assert.equal(pacer.cleared(), undefined, 'no step before recoverStepMs');
    await clock.advance(20_000);
    assert.deepEqual(pacer.cleared(), { count: 3, perMs: 1000 }, 'a quarter of the pace back');
    assert.equal(pacer.cleared(), undefined, 'one step per recoverStepMs');
    await clock.advance(30_000);
    assert.deepEqual(pacer.cleared(), { count: 5, perMs: 1000 });
    await clock.advance(30_000);
    assert.deepEqual(pacer.cleared(), { count: 7, perMs: 1000 });
    await clock.advance(30_000);
    assert.equal(pacer.cleared(), 'whole');
    assert.ok(!pacer.slowed());
    assert.equal(pacer.limit(), 8);
  });

  test('slowed, the starts spread out evenly instead of in bursts', async () => {
    const clock = new FakeClock();
    const pacer = new Pacer(rate('600/min'), clock);
    pacer.slowDown(); // 300/min: one every 200 ms
    const startedAt: number[] = [];
    const all = Array.from({ length: 50 }, () =>
      pacer.acquire().then((slot) => {
        startedAt.push(clock.now());
        setImmediate(() => slot.finish(true));
      }),
    );
    for (let step = 0; step < 200 && startedAt.length < 50; step++) await clock.advance(100);
    await Promise.all(all);
    assert.ok(maxInWindow(startedAt, 1000) <= 5, `${maxInWindow(startedAt, 1000)} in one second`);
    assert.ok(maxInWindow(startedAt, 1000) >= 4, 'but still at the slowed pace');
  });

  test('unpaced: a throttling reply imposes half of the last minute’s sends per minute', async () => {
    const clock = new FakeClock();
    const pacer = new Pacer(undefined, clock, { recoverStepMs: 30_000 });
    const { got, all } = acquireAll(pacer, clock, 40);
    await Promise.all(all);
    for (const g of got) g.slot.finish(true);
    assert.deepEqual(pacer.slowDown(), { count: 20, perMs: 60_000 });
    assert.equal(pacer.interval(), 3000, 'evenly: one every three seconds');
    const more = acquireAll(pacer, clock, 2);
    await flush();
    assert.equal(more.got.filter(Boolean).length, 1, 'the first at once');
    await clock.advance(3000);
    assert.equal(more.got.filter(Boolean).length, 2);
    await clock.advance(30_000);
    assert.deepEqual(pacer.cleared(), { count: 30, perMs: 60_000 }, 'one step: a quarter back');
    await clock.advance(30_000);
    assert.equal(pacer.cleared(), 'whole', 'a half comes back in two steps of a quarter');
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
