// Messages just accepted, held for their first attempt: handed over once; bounded in count
// (the newest is not held past 1,000) and in body bytes (no body kept past 16 MB).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { newQueueId, type QueueEntry } from '../../src/spool/entry.js';
import { JustAccepted, KEPT_BODY_MAX } from '../../src/spool/just-accepted.js';

function entry(id = newQueueId()): QueueEntry {
  return {
    id,
    from: 'app@corp.example',
    originalFrom: 'app@corp.example',
    recipients: [{ address: 'a@example.com', status: 'pending' }],
    source: 'test',
    client: { address: '127.0.0.1' },
    createdAt: 0,
    attempts: 0,
    nextAttemptAt: 0,
    size: 5,
  };
}

test('held once; a body over the size limit is not kept, its state is', () => {
  const held = new JustAccepted();
  const a = entry();
  const big = entry();
  held.hold(a, Buffer.from('hello'));
  held.hold(big, Buffer.alloc(KEPT_BODY_MAX + 1));
  assert.equal(held.take(a.id)?.data?.toString(), 'hello');
  assert.equal(held.take(a.id), undefined);
  const taken = held.take(big.id);
  assert.equal(taken?.entry, big);
  assert.equal(taken?.data, undefined);
  assert.equal(held.size, 0);
});

test('at most 1,000 held: the newest are not, and room comes back as they are taken', () => {
  const held = new JustAccepted();
  const entries = Array.from({ length: 1005 }, () => entry());
  for (const e of entries) held.hold(e);
  assert.equal(held.size, 1000);
  assert.ok(held.take(entries[0]!.id), 'the oldest are held');
  assert.equal(held.take(entries[1004]!.id), undefined, 'the newest are not');
  held.hold(entries[1004]!);
  assert.equal(held.take(entries[1004]!.id)?.entry, entries[1004], 'room again once one is taken');
});

test('at most 16 MB of bodies: past that, the state is held without its body', () => {
  const held = new JustAccepted();
  const body = Buffer.alloc(KEPT_BODY_MAX);
  const fit = (16 * 1024 * 1024) / KEPT_BODY_MAX;
  const entries = Array.from({ length: fit + 1 }, () => entry());
  for (const e of entries) held.hold(e, body);
  assert.ok(held.take(entries[fit - 1]!.id)?.data, 'the last that fits has its body');
  const over = held.take(entries[fit]!.id);
  assert.equal(over?.entry, entries[fit]);
  assert.equal(over?.data, undefined, 'no room for its body');
  // Taking and dropping give the bytes back.
  held.drop(entries[0]!.id);
  const late = entry();
  held.hold(late, body);
  assert.ok(held.take(late.id)?.data);
});
