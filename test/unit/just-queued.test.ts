// A message just accepted reaches the queue as a queued item, its state and small body, and its
// first attempt uses them instead of the files (src/queue/just-queued.ts): handed over once;
// bounded in count (the newest is not held past 1,000) and in body bytes (none past 16 MB);
// gone when an admin deletes the message or it is queued again by id.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { Bouncer } from '../../src/bounce/bouncer.js';
import { parseConfig } from '../../src/config/load.js';
import type { Courier, MessageBody, RecipientResult } from '../../src/delivery/courier.js';
import { silentLogger } from '../../src/log.js';
import { DeliveryQueue } from '../../src/queue/delivery-queue.js';
import { JustQueued } from '../../src/queue/just-queued.js';
import { newQueueId, type QueueEntry } from '../../src/spool/entry.js';
import { KEPT_BODY_MAX, Spool } from '../../src/spool/spool.js';
import { makeTempDir } from '../helpers/tmp.js';

function entry(id = newQueueId()): QueueEntry {
  return {
    id,
    from: 'app@corp.example',
    originalFrom: 'app@corp.example',
    recipients: [{ address: 'a@example.com', status: 'pending' }],
    source: 'test',
    client: { address: '127.0.0.1' },
    createdAt: Date.now(),
    attempts: 0,
    nextAttemptAt: Date.now(),
    size: 5,
  };
}

describe('JustQueued: the bounds', () => {
  test('held once; an item without a body is held without one', () => {
    const held = new JustQueued();
    const a = entry();
    const plain = entry();
    held.hold({ entry: a, body: Buffer.from('hello') });
    held.hold({ entry: plain });
    assert.equal(held.take(a.id)?.body?.toString(), 'hello');
    assert.equal(held.take(a.id), undefined);
    const taken = held.take(plain.id);
    assert.equal(taken?.entry, plain);
    assert.equal(taken?.body, undefined);
    assert.equal(held.size, 0);
  });

  test('at most 10,000 held: the newest are not, and room comes back as they are taken', () => {
    const held = new JustQueued();
    const entries = Array.from({ length: 10_005 }, () => entry());
    for (const e of entries) held.hold({ entry: e });
    assert.equal(held.size, 10_000);
    assert.ok(held.take(entries[0]!.id), 'the oldest are held');
    assert.equal(held.take(entries[10_004]!.id), undefined, 'the newest are not');
    held.hold({ entry: entries[10_004]! });
    assert.equal(held.take(entries[10_004]!.id)?.entry, entries[10_004], 'room again once one is taken');
  });

  test('at most 16 MB of bodies: past that, the state is held without its body', () => {
    const held = new JustQueued();
    const body = Buffer.alloc(KEPT_BODY_MAX);
    const fit = (16 * 1024 * 1024) / KEPT_BODY_MAX;
    const entries = Array.from({ length: fit + 1 }, () => entry());
    for (const e of entries) held.hold({ entry: e, body });
    assert.ok(held.take(entries[fit - 1]!.id)?.body, 'the last that fits has its body');
    const over = held.take(entries[fit]!.id);
    assert.equal(over?.entry, entries[fit]);
    assert.equal(over?.body, undefined, 'no room for its body');
    // Taking and dropping give the bytes back.
    held.drop(entries[0]!.id);
    const late = entry();
    held.hold({ entry: late, body });
    assert.ok(held.take(late.id)?.body);
  });
});

describe('the queued item through the queue', { timeout: 30_000 }, () => {
  async function setup() {
    const dir = await makeTempDir('just-queued');
    const config = parseConfig(
      { hostname: 'relay.test', queue: { retry: ['50ms'] }, bounces: { to: 'postmaster@corp.example' } },
      { env: {}, baseDir: dir, source: 'test' },
    );
    const spool = new Spool(path.join(dir, 'data'));
    await spool.init();
    const seen: { attempts: number; data?: string; pending: string[] }[] = [];
    let reply: (recipient: string) => RecipientResult = (recipient) => ({
      recipient,
      outcome: 'temporary',
      reply: '451 4.3.0 later',
    });
    const courier: Courier = {
      description: 'recording',
      async send(e: QueueEntry, recipients: string[], body: MessageBody) {
        seen.push({ attempts: e.attempts, data: body.data?.toString('latin1'), pending: recipients });
        return recipients.map((r) => reply(r));
      },
      async close() {},
    };
    const log = silentLogger();
    const dq = new DeliveryQueue({
      spool,
      courier: () => courier,
      bouncer: new Bouncer(spool, () => config, log),
      log,
      config: () => config,
    });
    const accept = (text: string) => {
      const { size: _size, ...fresh } = entry();
      return spool.acceptMessage(Readable.from([Buffer.from(text)]), fresh);
    };
    const until = async (what: string, check: () => boolean) => {
      const deadline = Date.now() + 10_000;
      while (!check()) {
        if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
        await new Promise((r) => setTimeout(r, 10));
      }
    };
    return {
      spool,
      dq,
      seen,
      accept,
      until,
      deliver: () => (reply = (r) => ({ recipient: r, outcome: 'delivered', reply: '250 ok' })),
    };
  }

  test('the first attempt uses the item’s state and body, not the files; a retry reads the files', async () => {
    const q = await setup();
    const queued = await q.accept('Subject: kept\r\n\r\nhello\r\n');
    assert.ok(queued.body, 'small: the body came with the item');
    // Were the first attempt to read the file it would find another body.
    const file = path.join(q.spool.queueDir, `${queued.entry.id}.msg`);
    await fs.writeFile(file, (await fs.readFile(file, 'latin1')).replace('hello', 'HELLO'), 'latin1');
    q.dq.enqueue(queued);
    await q.until('the first attempt', () => q.seen.length === 1);
    assert.deepEqual(q.seen[0], {
      attempts: 0,
      data: 'Subject: kept\r\n\r\nhello\r\n',
      pending: ['a@example.com'],
    });
    // The attempt wrote the state back; the retry reads it, and the body from the file.
    await q.until('the retry', () => q.seen.length === 2);
    assert.equal(q.seen[1]?.attempts, 1, 'the state written back by the first attempt');
    assert.equal(q.seen[1]?.data, undefined, 'no body in memory any more');
    await q.dq.stop();
  });

  test('a large body is not in the item: the first attempt streams it from the file', async () => {
    const q = await setup();
    q.deliver();
    const queued = await q.accept(`Subject: big\r\n\r\n${'x'.repeat(KEPT_BODY_MAX)}\r\n`);
    assert.equal(queued.body, undefined);
    q.dq.enqueue(queued);
    await q.until('the attempt', () => q.seen.length === 1);
    assert.equal(q.seen[0]?.data, undefined);
    await q.dq.stop();
  });

  test('forgotten (an admin’s delete) or queued again by id: the item is dropped', async () => {
    const q = await setup();
    q.deliver();
    const deleted = await q.accept('Subject: deleted\r\n\r\nx\r\n');
    const later = Date.now() + 60_000;
    q.dq.enqueue(deleted, later);
    q.dq.forget(deleted.entry.id);
    const requeued = await q.accept('Subject: requeued\r\n\r\nx\r\n');
    q.dq.enqueue(requeued, later);
    q.dq.enqueue(requeued.entry.id);
    await q.until('the attempt', () => q.seen.length === 1);
    assert.equal(q.seen[0]?.data, undefined, 'read from the disk, not the item');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(q.seen.length, 1, 'the forgotten message was not attempted');
    await q.dq.stop();
  });
});
