// The durable spool: a new message is one file in queue/ (its body, then its envelope), split
// into a body and an envelope at its first change of state; a failed write leaves nothing;
// start-up sweeps what a crash left; dead letters and requeue.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { newQueueId, pendingRecipients, QUEUE_ID_PATTERN, type QueueEntry } from '../../src/spool/entry.js';
import { KEPT_BODY_MAX, Spool, type NewEntry } from '../../src/spool/spool.js';
import { storedBody as bodyOf } from '../helpers/stored-body.js';
import { makeTempDir } from '../helpers/tmp.js';

async function newSpool(): Promise<Spool> {
  const spool = new Spool(path.join(await makeTempDir('spool'), 'data'));
  await spool.init();
  return spool;
}

function entry(overrides: Partial<NewEntry> = {}): NewEntry {
  const now = Date.now();
  return {
    id: newQueueId(),
    from: 'app@corp.example',
    originalFrom: 'app@corp.example',
    recipients: [
      { address: 'a@example.com', status: 'pending' },
      { address: 'b@example.com', status: 'pending' },
    ],
    source: 'test',
    client: { address: '127.0.0.1' },
    createdAt: now,
    attempts: 0,
    nextAttemptAt: now,
    ...overrides,
  };
}

const ls = async (dir: string) => (await fs.readdir(dir)).sort();

describe('queue ids', () => {
  test('match the pattern and sort by time', () => {
    const early = newQueueId(1_000_000);
    const late = newQueueId(2_000_000_000_000);
    assert.match(early, QUEUE_ID_PATTERN);
    assert.match(late, QUEUE_ID_PATTERN);
    assert.ok(early < late);
    assert.notEqual(newQueueId(5), newQueueId(5), 'random part');
  });
});

describe('Spool', () => {
  test('accept writes one file, <id>.msg, into queue/: the body, then the envelope', async () => {
    const spool = await newSpool();
    const e = entry();
    const stored = await spool.accept(
      Readable.from([Buffer.from('Subject: a\r\n\r\n'), Buffer.from('body\r\n')]),
      e,
    );
    assert.equal(stored.size, 20);
    assert.equal(stored.oneFile, true);
    assert.deepEqual(await ls(spool.queueDir), [`${e.id}.msg`]);
    assert.deepEqual(await ls(spool.tmpDir), []);
    const file = await fs.readFile(path.join(spool.queueDir, `${e.id}.msg`), 'utf8');
    assert.ok(file.startsWith('Subject: a\r\n\r\nbody\r\n{"id":'), file);
    assert.match(file, /\nSMARTHOST-ENVELOPE-1 \d{10}\n$/);
    assert.equal((await bodyOf(spool, stored)).toString(), 'Subject: a\r\n\r\nbody\r\n');
    assert.deepEqual(await spool.read(e.id), stored, 'read back from the file, as accepted');
    assert.deepEqual(await spool.list(), [e.id]);
  });

  test('a stream that fails midway leaves no file anywhere', async () => {
    const spool = await newSpool();
    const failing = new Readable({
      read() {
        this.push(Buffer.alloc(100_000, 0x61));
        this.destroy(new Error('client went away'));
      },
    });
    await assert.rejects(spool.accept(failing, entry()), /client went away/);
    assert.deepEqual(await ls(spool.tmpDir), []);
    assert.deepEqual(await ls(spool.queueDir), []);
  });

  test('a large body is written whole', async () => {
    const spool = await newSpool();
    const chunks = Array.from({ length: 100 }, (_, i) => Buffer.alloc(10_000 + i, 0x30 + (i % 10)));
    const e = entry();
    const stored = await spool.accept(Readable.from(chunks), e);
    const expected = Buffer.concat(chunks);
    assert.equal(stored.size, expected.length);
    assert.ok((await bodyOf(spool, stored)).equals(expected));
  });

  test('messages received together are written alike, and a failure leaves only the others', async () => {
    // The first message, alone when it starts, is written inline; those that arrive while it is
    // still being received go through the thread pool (src/spool/fsync.ts).
    const spool = await newSpool();
    const first = new PassThrough();
    const [a, b, c] = [entry(), entry(), entry()];
    const acceptedA = spool.accept(first, a);
    first.write('Subject: a\r\n\r\n');
    const small = Buffer.from('Subject: b\r\n\r\nbee\r\n');
    const large = Buffer.alloc(300_000, 0x63);
    const failing = new Readable({
      read() {
        this.push(Buffer.alloc(70_000, 0x64));
        this.destroy(new Error('client went away'));
      },
    });
    const results = await Promise.allSettled([
      spool.accept(Readable.from([small]), b),
      spool.accept(Readable.from([large.subarray(0, 100_000), large.subarray(100_000)]), c),
      spool.accept(failing, entry()),
    ]);
    first.end('alpha\r\n');
    const storedA = await acceptedA;
    assert.deepEqual(
      results.map((r) => r.status),
      ['fulfilled', 'fulfilled', 'rejected'],
    );
    const [storedB, storedC] = results.map((r) => (r.status === 'fulfilled' ? r.value : undefined));
    assert.equal((await bodyOf(spool, storedA)).toString(), 'Subject: a\r\n\r\nalpha\r\n');
    assert.ok((await bodyOf(spool, storedB!)).equals(small));
    assert.ok((await bodyOf(spool, storedC!)).equals(large));
    for (const e of [a, b, c]) assert.equal((await spool.read(e.id))?.id, e.id);
    const ids = [a, b, c].map((e) => e.id);
    assert.deepEqual(await ls(spool.queueDir), ids.map((id) => `${id}.msg`).sort());
  });

  test('the first update splits a message into <id>.eml and <id>.json, the body cut back to itself', async () => {
    const spool = await newSpool();
    const stored = await spool.accept(Readable.from([Buffer.from('Subject: s\r\n\r\nx\r\n')]), entry());
    await spool.update({ ...stored, attempts: 1 });
    assert.deepEqual(await ls(spool.queueDir), [`${stored.id}.eml`, `${stored.id}.json`]);
    assert.deepEqual(await ls(spool.tmpDir), []);
    assert.equal(await fs.readFile(spool.bodyPath(stored.id), 'utf8'), 'Subject: s\r\n\r\nx\r\n');
    const read = await spool.read(stored.id);
    assert.equal(read?.attempts, 1);
    assert.equal(read?.oneFile, undefined, 'split: never written to the .json');
    assert.equal(read?.size, stored.size);
    assert.deepEqual(spool.bodyOf(read!), { path: spool.bodyPath(stored.id) });
  });

  test('update rewrites the envelope only; the body file is the same file', async () => {
    const spool = await newSpool();
    const first = await spool.accept(Readable.from([Buffer.from('x\r\n')]), entry());
    await spool.update({ ...first, attempts: 0 });
    const { oneFile: _split, ...stored } = first;
    const before = await fs.stat(spool.bodyPath(stored.id));
    const changed: QueueEntry = {
      ...stored,
      attempts: 1,
      lastError: '451 later',
      recipients: [
        { address: 'a@example.com', status: 'delivered' },
        { address: 'b@example.com', status: 'pending', lastReply: '451 later' },
      ],
    };
    await spool.update(changed);
    // The body's checksum is only kept until the body is known to be durable.
    const { bodyCrc32: _crc, ...state } = changed;
    assert.deepEqual(await spool.read(stored.id), state);
    assert.deepEqual(pendingRecipients(changed), ['b@example.com']);
    const after = await fs.stat(spool.bodyPath(stored.id));
    assert.equal(after.ino, before.ino);
    assert.equal(after.mtimeMs, before.mtimeMs);
    assert.deepEqual(await ls(spool.tmpDir), []);
  });

  test('remove deletes a message in either layout; read then says undefined', async () => {
    const spool = await newSpool();
    const one = await spool.accept(Readable.from([Buffer.from('x\r\n')]), entry());
    const split = await spool.accept(Readable.from([Buffer.from('y\r\n')]), entry());
    await spool.update(split);
    assert.equal(await spool.remove(one.id, 'one file'), true);
    assert.equal(await spool.remove(split.id, 'split'), true);
    for (const { id } of [one, split]) {
      assert.equal(await spool.remove(id), false);
      assert.equal(await spool.read(id), undefined);
    }
    assert.deepEqual(await ls(spool.queueDir), []);
  });

  test('list gives queued ids oldest first and ignores foreign files', async () => {
    const spool = await newSpool();
    const ids = [];
    for (const t of [3_000_000, 1_000_000, 2_000_000]) {
      const e = entry({ id: newQueueId(t) });
      await spool.accept(Readable.from([Buffer.from('x')]), e);
      ids.push(e.id);
    }
    await fs.writeFile(path.join(spool.queueDir, 'README.json'), '{}');
    await fs.writeFile(path.join(spool.queueDir, 'notes.txt'), '');
    assert.deepEqual(await spool.list(), [...ids].sort());
    assert.deepEqual(await spool.list(), [ids[1], ids[2], ids[0]]);
  });

  test('init sweeps temp files and bodies without an envelope, keeps whole messages', async () => {
    const spool = await newSpool();
    const kept = await spool.accept(Readable.from([Buffer.from('x')]), entry());
    await fs.writeFile(path.join(spool.tmpDir, 'A.1.1.eml'), 'half');
    await fs.writeFile(path.join(spool.tmpDir, 'A.1.2.json'), '{');
    const orphan = newQueueId();
    await fs.writeFile(spool.bodyPath(orphan), 'no envelope, never acknowledged');
    const again = new Spool(spool.dir);
    assert.deepEqual(await again.init(), {
      tmpFiles: 2,
      orphanBodies: 1,
      interruptedMoves: 0,
      reunited: 0,
      splitsFinished: 0,
      tightened: [],
    });
    assert.deepEqual(await ls(again.tmpDir), []);
    assert.deepEqual(await again.list(), [kept.id]);
    assert.deepEqual(await ls(again.queueDir), [`${kept.id}.msg`]);
    assert.deepEqual(await again.init(), {
      tmpFiles: 0,
      orphanBodies: 0,
      interruptedMoves: 0,
      reunited: 0,
      splitsFinished: 0,
      tightened: [],
    });
  });

  test('init finishes a move to failed/ that a crash cut short after the body went', async () => {
    const spool = await newSpool();
    const stored = await spool.accept(Readable.from([Buffer.from('Subject: dead\r\n\r\n')]), entry());
    const other = await spool.accept(Readable.from([Buffer.from('x')]), entry());
    // The state of the files after a crash inside moveToFailed: dead letter and body in
    // failed/, the envelope still in queue/.
    await spool.moveToFailed(stored, 'gone');
    await fs.writeFile(path.join(spool.queueDir, `${stored.id}.json`), JSON.stringify(stored));
    const again = new Spool(spool.dir);
    assert.deepEqual(await again.init(), {
      tmpFiles: 0,
      orphanBodies: 0,
      interruptedMoves: 1,
      reunited: 0,
      splitsFinished: 0,
      tightened: [],
    });
    assert.deepEqual(await again.list(), [other.id]);
    assert.deepEqual(
      (await again.failed.list()).map((d) => d.id),
      [stored.id],
    );
  });

  test('moveToFailed keeps body and state with the reason; requeue brings it back', async () => {
    const spool = await newSpool();
    const stored = await spool.accept(Readable.from([Buffer.from('Subject: dead\r\n\r\n')]), entry());
    stored.recipients[0]!.status = 'delivered';
    stored.recipients[1]!.status = 'failed';
    await spool.moveToFailed(stored, 'b@example.com: 550 5.1.1 gone');
    assert.deepEqual(await spool.list(), []);
    assert.deepEqual(await ls(spool.queueDir), []);
    assert.deepEqual(await ls(spool.failedDir), [`${stored.id}.eml`, `${stored.id}.json`]);
    const [dead] = await spool.failed.list();
    assert.equal(dead?.id, stored.id);
    assert.equal(dead?.reason, 'b@example.com: 550 5.1.1 gone');
    assert.equal(typeof dead?.failedAt, 'number');

    const requeued = await spool.requeue(stored.id, 1234);
    assert.ok(requeued);
    assert.deepEqual(
      requeued.recipients.map((r) => r.status),
      ['delivered', 'pending'],
      'only the failed recipient is pending again',
    );
    assert.equal(requeued.nextAttemptAt, 1234);
    assert.deepEqual(await spool.list(), [stored.id]);
    assert.equal(await fs.readFile(spool.bodyPath(stored.id), 'utf8'), 'Subject: dead\r\n\r\n');
    assert.deepEqual(await ls(spool.failedDir), []);
    assert.equal(await spool.requeue('0NOSUCHID0000000000'), undefined);
  });

  test('acceptMessage: the queued item carries the body’s bytes when small, as written', async () => {
    const spool = await newSpool();
    // Written in several chunks and batches: what is kept must be all of them, in order.
    const chunks = Array.from({ length: 40 }, (_, i) => Buffer.alloc(1500, 0x41 + (i % 26)));
    const small = await spool.acceptMessage(Readable.from(chunks), entry());
    assert.deepEqual(small.entry, await spool.read(small.entry.id), 'the state as on disk');
    assert.ok(small.body, 'its body kept in memory');
    assert.ok(small.body.equals(await bodyOf(spool, small.entry)), 'the same bytes as the file');

    const exact = await spool.acceptMessage(Readable.from([Buffer.alloc(KEPT_BODY_MAX, 0x61)]), entry());
    assert.equal(exact.body?.length, KEPT_BODY_MAX, 'up to 64 KB kept');
    const large = await spool.acceptMessage(Readable.from([Buffer.alloc(KEPT_BODY_MAX + 1, 0x61)]), entry());
    assert.equal(large.entry.size, KEPT_BODY_MAX + 1);
    assert.equal(large.body, undefined, 'larger than 64 KB: streamed from disk');
    // A larger body, in many chunks, written in 64 KB batches as it arrives.
    const chunked = Array.from({ length: 90 }, (_, i) => Buffer.alloc(1000, 0x30 + (i % 10)));
    const many = await spool.acceptMessage(Readable.from(chunked), entry());
    assert.ok((await bodyOf(spool, many.entry)).equals(Buffer.concat(chunked)), 'every byte, in order');
    assert.deepEqual(many.entry, await spool.read(many.entry.id), 'its envelope after the body');
  });

  test('acceptBuffer queues a message the relay made itself', async () => {
    const spool = await newSpool();
    const e = entry({ from: '', bounceOf: 'X' });
    const stored = await spool.acceptBuffer(Buffer.from('bounce'), e);
    assert.equal(stored.size, 6);
    assert.equal((await spool.read(e.id))?.bounceOf, 'X');
  });

  test('isWritable is true on a working spool and leaves no probe behind', async () => {
    const spool = await newSpool();
    assert.equal(await spool.isWritable(), true);
    assert.deepEqual(await ls(spool.tmpDir), []);
  });
});

describe('Spool: what a crash during a reception leaves', () => {
  test('the .msg is in queue/ while the body arrives, and is not swept while it does', async () => {
    const spool = await newSpool();
    const e = entry();
    const body = new PassThrough();
    const accepting = spool.accept(body, e);
    body.write('Subject: slow\r\n\r\n');
    for (let i = 0; i < 200 && (await ls(spool.queueDir)).length < 1; i++)
      await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(await ls(spool.queueDir), [`${e.id}.msg`]);
    assert.equal(await spool.read(e.id), undefined, 'not a message until it is complete');
    assert.equal(await spool.sweepIfIncomplete(e.id), false, 'swept while being received');
    body.end('the end\r\n');
    const stored = await accepting;
    assert.deepEqual(await spool.read(e.id), stored);
    assert.equal(await spool.sweepIfIncomplete(e.id), false, 'a complete message is never swept');
  });

  test('an empty or cut-short .json is swept with its body', async () => {
    const spool = await newSpool();
    for (const text of ['', '{"id":"cut sh']) {
      const id = newQueueId();
      await fs.writeFile(path.join(spool.queueDir, `${id}.eml`), 'Subject: x\r\n\r\nhalf');
      await fs.writeFile(path.join(spool.queueDir, `${id}.json`), text);
      assert.equal(await spool.read(id), undefined);
      assert.equal(await spool.sweepIfIncomplete(id), true);
      assert.deepEqual(await ls(spool.queueDir), []);
    }
  });

  test('the body checksum finds a body that did not all reach the disk', async () => {
    const spool = await newSpool();
    const stored = await spool.accept(
      Readable.from([Buffer.from('Subject: x\r\n\r\nall of it\r\n')]),
      entry(),
    );
    assert.equal(typeof stored.bodyCrc32, 'number');
    assert.equal(await spool.verifyBody(stored), true);
    // A hole in the body of a .msg whose envelope did reach the disk (pages go in any order).
    const msg = path.join(spool.queueDir, `${stored.id}.msg`);
    const whole = await fs.readFile(msg);
    await fs.writeFile(msg, Buffer.concat([Buffer.alloc(10), whole.subarray(10)]));
    const readBack = await spool.read(stored.id);
    assert.ok(readBack, 'the envelope is whole');
    assert.equal(await spool.verifyBody(readBack), false, 'a hole in a .msg passed');
    await spool.update(stored); // split, the good body back
    await fs.writeFile(spool.bodyPath(stored.id), 'Subject: x\r\n\r\nall of it\r\n');
    assert.equal(await spool.verifyBody({ ...stored, oneFile: undefined }), true);
    await fs.truncate(spool.bodyPath(stored.id), 10);
    const split = { ...stored, oneFile: undefined };
    assert.equal(await spool.verifyBody(split), false, 'a cut body passed');
    await fs.writeFile(spool.bodyPath(stored.id), 'Subject: x\r\n\r\nall of iT\r\n');
    assert.equal(await spool.verifyBody(split), false, 'a changed byte passed');
    await fs.unlink(spool.bodyPath(stored.id));
    assert.equal(await spool.verifyBody(split), false, 'a missing body passed');
    const { bodyCrc32: _none, ...older } = split;
    assert.equal(await spool.verifyBody(older), true, 'an entry without a checksum is taken as it is');
  });
});

describe('Spool: one file per new message (one-file.ts)', () => {
  test('a .msg cut short or torn is not a message, and is swept unless being received', async () => {
    const spool = await newSpool();
    const good = await spool.accept(Readable.from([Buffer.from('Subject: g\r\n\r\ngood\r\n')]), entry());
    const whole = await fs.readFile(path.join(spool.queueDir, `${good.id}.msg`));
    const damaged = [
      whole.subarray(0, 12), // the body only: no envelope reached the disk
      whole.subarray(0, whole.length - 5), // the footer cut
      Buffer.concat([whole.subarray(0, whole.length - 40), Buffer.alloc(40)]), // zeroes at the end
      Buffer.from(whole.toString('latin1').replace(/ \d{10}\n$/, ' 9999999999\n'), 'latin1'), // a length that lies
      Buffer.from(whole.toString('latin1').replace('"size":', '"size":1'), 'latin1'), // sizes that disagree
    ];
    for (const bytes of damaged) {
      const id = newQueueId();
      await fs.writeFile(path.join(spool.queueDir, `${id}.msg`), bytes);
      assert.equal(await spool.read(id), undefined, `read: ${bytes.length} bytes`);
      assert.deepEqual(await spool.list(), [good.id, id].sort(), 'listed until swept');
      assert.equal(await spool.sweepIfIncomplete(id), true);
      assert.equal(await spool.sweepIfIncomplete(id), false, 'nothing left to sweep');
    }
    assert.deepEqual(await ls(spool.queueDir), [`${good.id}.msg`]);
    assert.equal(await spool.sweepIfIncomplete(good.id), false, 'a whole message is never swept');
  });

  test('init finishes a split that a crash cut short after the .json was written', async () => {
    const spool = await newSpool();
    const stored = await spool.accept(Readable.from([Buffer.from('Subject: s\r\n\r\nsplit\r\n')]), entry());
    const { oneFile: _one, bodyCrc32: _crc, ...state } = { ...stored, attempts: 1, lastError: '451 later' };
    await fs.writeFile(path.join(spool.queueDir, `${stored.id}.json`), JSON.stringify(state));
    const again = new Spool(spool.dir);
    const swept = await again.init();
    assert.equal(swept.splitsFinished, 1);
    assert.deepEqual(await ls(again.queueDir), [`${stored.id}.eml`, `${stored.id}.json`]);
    assert.equal(await fs.readFile(again.bodyPath(stored.id), 'utf8'), 'Subject: s\r\n\r\nsplit\r\n');
    assert.deepEqual(await again.read(stored.id), state, 'the .json is the state');
    assert.equal((await again.init()).splitsFinished, 0, 'done once');
  });

  test('a split that failed half-way while running is finished by the next update', async () => {
    const spool = await newSpool();
    const stored = await spool.accept(Readable.from([Buffer.from('Subject: h\r\n\r\nhalf\r\n')]), entry());
    // The .json was written, the .msg was not yet cut back and renamed (say, the fsync failed).
    const { oneFile: _one, ...state } = { ...stored, attempts: 1 };
    await fs.writeFile(path.join(spool.queueDir, `${stored.id}.json`), JSON.stringify(state));
    const read = await spool.read(stored.id);
    assert.equal(read?.oneFile, undefined, 'the .json is the state');
    await spool.update({ ...read!, attempts: 2 });
    assert.deepEqual(await ls(spool.queueDir), [`${stored.id}.eml`, `${stored.id}.json`]);
    assert.equal(await fs.readFile(spool.bodyPath(stored.id), 'utf8'), 'Subject: h\r\n\r\nhalf\r\n');
    assert.equal((await spool.read(stored.id))?.attempts, 2);
  });

  test('hold, release and a dead letter split the message first: its .eml is the body alone', async () => {
    const spool = await newSpool();
    const held = await spool.accept(Readable.from([Buffer.from('Subject: h\r\n\r\nheld\r\n')]), entry());
    assert.equal(await spool.hold(held.id), true);
    assert.deepEqual(await ls(spool.held.holdDir), [`${held.id}.eml`, `${held.id}.json`]);
    assert.equal(await fs.readFile(spool.held.bodyPath(held.id), 'utf8'), 'Subject: h\r\n\r\nheld\r\n');
    assert.equal((await spool.held.read(held.id))?.oneFile, undefined);
    assert.equal(await spool.held.release(held.id), true);
    assert.equal((await spool.read(held.id))?.size, held.size);

    const dead = await spool.accept(Readable.from([Buffer.from('Subject: d\r\n\r\ndead\r\n')]), entry());
    await spool.moveToFailed(dead, 'a@example.com: 550 5.1.1 gone');
    assert.deepEqual(await ls(spool.failedDir), [`${dead.id}.eml`, `${dead.id}.json`]);
    assert.equal(await fs.readFile(spool.failed.bodyPath(dead.id), 'utf8'), 'Subject: d\r\n\r\ndead\r\n');
    const [letter] = await spool.failed.list();
    assert.equal(letter?.oneFile, undefined);
    assert.deepEqual(await ls(spool.queueDir), [`${held.id}.eml`, `${held.id}.json`]);
  });

  test('a message queued by an older version (<id>.eml and <id>.json) is read and sent as before', async () => {
    const spool = await newSpool();
    const old: QueueEntry = { ...entry(), size: 9 };
    await fs.writeFile(spool.bodyPath(old.id), 'Subject: \r');
    await fs.truncate(spool.bodyPath(old.id), 9);
    await fs.writeFile(path.join(spool.queueDir, `${old.id}.json`), JSON.stringify(old));
    const again = new Spool(spool.dir);
    assert.equal((await again.init()).orphanBodies, 0);
    assert.deepEqual(await again.list(), [old.id]);
    const read = await again.read(old.id);
    assert.deepEqual(read, old);
    assert.deepEqual(again.bodyOf(read!), { path: again.bodyPath(old.id) });
    assert.equal(await again.storedSize(old.id), 9);
    assert.equal(await again.remove(old.id), true);
    assert.deepEqual(await ls(again.queueDir), []);
  });
});
