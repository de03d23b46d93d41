// The in-memory copies of small bodies just accepted: handed over once, bounded in size, count
// and bytes, oldest dropped first.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { RECENT_BODY_MAX, RecentBodies } from '../../src/spool/recent-bodies.js';

test('a body is taken once; a body over the size limit is not kept', () => {
  const bodies = new RecentBodies();
  bodies.keep('a', Buffer.from('hello'));
  bodies.keep('big', Buffer.alloc(RECENT_BODY_MAX + 1));
  assert.equal(bodies.take('a')?.toString(), 'hello');
  assert.equal(bodies.take('a'), undefined);
  assert.equal(bodies.take('big'), undefined);
  assert.equal(bodies.size, 0);
});

test('at most 1,000 bodies: the oldest go first', () => {
  const bodies = new RecentBodies();
  for (let i = 0; i < 1005; i++) bodies.keep(`m${i}`, Buffer.from(String(i)));
  assert.equal(bodies.size, 1000);
  assert.equal(bodies.take('m4'), undefined, 'among the five oldest, dropped');
  assert.equal(bodies.take('m5')?.toString(), '5');
  assert.equal(bodies.take('m1004')?.toString(), '1004');
});

test('at most 16 MB in all, whatever the count', () => {
  const bodies = new RecentBodies();
  const body = Buffer.alloc(RECENT_BODY_MAX);
  const fit = (16 * 1024 * 1024) / RECENT_BODY_MAX;
  for (let i = 0; i < fit + 3; i++) bodies.keep(`m${i}`, body);
  assert.equal(bodies.size, fit);
  assert.equal(bodies.take('m2'), undefined);
  assert.ok(bodies.take('m3'));
  // Dropping and taking give their bytes back: room for as many again.
  bodies.drop('m4');
  bodies.keep('late', body);
  assert.equal(bodies.size, fit - 1, 'two out, one in, nothing else dropped');
  assert.ok(bodies.take('m5'));
});
