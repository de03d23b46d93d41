// retryDelay: the configured schedule (last interval repeats) with ±10 % jitter, in floats.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { retryDelay } from '../../src/queue/backoff.js';

const SCHEDULE = [60_000, 300_000, 900_000];
const middle = () => 0.5;

describe('retryDelay', () => {
  test('follows the schedule by attempt number, the last interval repeating', () => {
    assert.equal(retryDelay(1, SCHEDULE, middle), 60_000);
    assert.equal(retryDelay(2, SCHEDULE, middle), 300_000);
    assert.equal(retryDelay(3, SCHEDULE, middle), 900_000);
    assert.equal(retryDelay(4, SCHEDULE, middle), 900_000);
    assert.equal(retryDelay(1000, SCHEDULE, middle), 900_000);
  });

  test('attempt 0 (or below) counts as the first', () => {
    assert.equal(retryDelay(0, SCHEDULE, middle), 60_000);
    assert.equal(retryDelay(-3, SCHEDULE, middle), 60_000);
  });

  test('jitter stays within ±10 % and is not truncated to whole units', () => {
    assert.equal(
      retryDelay(1, SCHEDULE, () => 0),
      54_000,
    );
    assert.ok(Math.abs(retryDelay(1, SCHEDULE, () => 0.999999) - 66_000) < 0.1);
    assert.equal(
      retryDelay(1, [1500], () => 0.123),
      1500 * (0.9 + 0.2 * 0.123),
    );
    assert.ok(!Number.isInteger(retryDelay(1, [1000], () => 0.3333)));
  });

  test('with the real random source, delays spread over the whole band', () => {
    const delays = Array.from({ length: 2000 }, () => retryDelay(1, [1000]));
    assert.ok(delays.every((d) => d >= 900 && d < 1100));
    assert.ok(Math.min(...delays) < 920 && Math.max(...delays) > 1080, 'spread, not in lockstep');
    assert.ok(new Set(delays).size > 1900);
  });
});
