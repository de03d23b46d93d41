// The counters behind the per-source limits, with a clock the test moves: token buckets,
// connection counts and failed-login lockouts, and the bound on their memory.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseRate } from '../../src/config/units.js';
import { AuthFailureTracker, ConnectionCounter, RateLimiter } from '../../src/policy/limits.js';

function clock(start = 1_000_000): { now: () => number; advance: (ms: number) => void } {
  let t = start;
  return { now: () => t, advance: (ms) => (t += ms) };
}

const rate = (text: string) => {
  const parsed = parseRate(text);
  assert.ok(parsed, text);
  return parsed;
};

describe('RateLimiter (token buckets)', () => {
  test('10/min and a burst of 15: exactly 10 pass, 5 are refused with a time to retry', () => {
    const c = clock();
    const limiter = new RateLimiter(c.now);
    const results = Array.from({ length: 15 }, () => limiter.take('allowlist:floor3', rate('10/min')));
    assert.equal(results.filter((r) => r.ok).length, 10);
    assert.deepEqual(
      results.map((r) => r.ok),
      [...Array<boolean>(10).fill(true), ...Array<boolean>(5).fill(false)],
    );
    const refused = results[10];
    assert.ok(refused && !refused.ok);
    assert.equal(refused.retryInMs, 6000, 'one token every 6 s at 10/min');
  });

  test('refills with time: one more after 6 s, a full burst after a minute', () => {
    const c = clock();
    const limiter = new RateLimiter(c.now);
    for (let i = 0; i < 10; i++) assert.ok(limiter.take('k', rate('10/min')).ok);
    assert.equal(limiter.take('k', rate('10/min')).ok, false);
    c.advance(3000);
    const half = limiter.take('k', rate('10/min'));
    assert.ok(!half.ok && half.retryInMs === 3000, 'half a token: 3 s to go');
    c.advance(3000);
    assert.ok(limiter.take('k', rate('10/min')).ok);
    assert.equal(limiter.take('k', rate('10/min')).ok, false);
    c.advance(60_000);
    const again = Array.from({ length: 12 }, () => limiter.take('k', rate('10/min')).ok);
    assert.equal(again.filter(Boolean).length, 10, 'a minute later the whole burst again, no more');
  });

  test('buckets are per key', () => {
    const limiter = new RateLimiter(clock().now);
    assert.ok(limiter.take('a', rate('1/hour')).ok);
    assert.equal(limiter.take('a', rate('1/hour')).ok, false);
    assert.ok(limiter.take('b', rate('1/hour')).ok);
  });

  test('a lowered rate (reload) caps the tokens at the new burst', () => {
    const limiter = new RateLimiter(clock().now);
    assert.ok(limiter.take('k', rate('100/min')).ok);
    const passed = Array.from({ length: 5 }, () => limiter.take('k', rate('2/min')).ok).filter(Boolean);
    assert.equal(passed.length, 2);
  });

  test('the default cap: 20,000 distinct keys leave 10,000 buckets', () => {
    const limiter = new RateLimiter(clock().now);
    for (let i = 0; i < 20_000; i++) limiter.take(`key-${i}`, rate('5/min'));
    assert.equal(limiter.size, 10_000);
  });

  test('10,000 distinct keys leave at most the LRU cap of buckets', () => {
    const limiter = new RateLimiter(clock().now, 1000);
    for (let i = 0; i < 10_000; i++)
      limiter.take(`10.${(i >> 16) & 255}.${(i >> 8) & 255}.${i & 255}`, rate('5/min'));
    assert.equal(limiter.size, 1000);
  });
});

describe('ConnectionCounter', () => {
  test('counts per address and in total; closing twice counts out once; idle addresses are forgotten', () => {
    const counter = new ConnectionCounter();
    const a1 = counter.open('10.0.0.1');
    const a2 = counter.open('10.0.0.1');
    const b1 = counter.open('10.0.0.2');
    assert.equal(counter.total, 3);
    assert.equal(counter.from('10.0.0.1'), 2);
    a1();
    a1();
    assert.equal(counter.total, 2);
    assert.equal(counter.from('10.0.0.1'), 1);
    a2();
    b1();
    assert.equal(counter.total, 0);
    assert.equal(counter.addresses, 0, 'no entry left for closed connections');
  });
});

describe('AuthFailureTracker', () => {
  const settings = { maxFailures: 5, windowMs: 600_000, lockoutMs: 900_000 };

  test('5 failures within 10 minutes lock the address out for 15 minutes', () => {
    const c = clock();
    const tracker = new AuthFailureTracker(c.now);
    for (let i = 0; i < 4; i++) {
      assert.equal(tracker.fail('10.0.0.9', settings), false);
      c.advance(60_000);
    }
    assert.equal(tracker.lockedFor('10.0.0.9'), 0);
    assert.equal(tracker.fail('10.0.0.9', settings), true, 'the fifth starts the lockout');
    assert.equal(tracker.lockedFor('10.0.0.9'), 900_000);
    assert.equal(tracker.lockedFor('10.0.0.10'), 0, 'other addresses unaffected');
    c.advance(899_000);
    assert.equal(tracker.lockedFor('10.0.0.9'), 1000);
    c.advance(1000);
    assert.equal(tracker.lockedFor('10.0.0.9'), 0, 'over after the cool-down');
  });

  test('failures older than the window do not count', () => {
    const c = clock();
    const tracker = new AuthFailureTracker(c.now);
    for (let i = 0; i < 10; i++) {
      assert.equal(tracker.fail('10.0.0.9', settings), false, `failure ${i + 1}, 3 minutes apart`);
      c.advance(180_000);
    }
  });

  test('10,000 distinct addresses leave at most the LRU cap of records', () => {
    const tracker = new AuthFailureTracker(clock().now, 2000);
    for (let i = 0; i < 10_000; i++) tracker.fail(`10.1.${i >> 8}.${i & 255}`, settings);
    assert.equal(tracker.size, 2000);
  });
});
