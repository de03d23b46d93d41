// The queue commands' work (src/control/queue-admin.ts) on a real spool, and the control socket
// (src/control/server.ts + client.ts) end to end in one process.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { controlRequest, ControlError, RelayNotRunning } from '../../src/control/client.js';
import { ControlRefusal } from '../../src/control/protocol.js';
import { QueueAdmin } from '../../src/control/queue-admin.js';
import { ControlServer } from '../../src/control/server.js';
import { silentLogger } from '../../src/log.js';
import { newQueueId } from '../../src/spool/entry.js';
import { Spool, type DeadLetter } from '../../src/spool/spool.js';
import { makeTempDir } from '../helpers/tmp.js';

async function spoolWith(count: number): Promise<{ spool: Spool; ids: string[] }> {
  const spool = new Spool(path.join(await makeTempDir('queue-admin'), 'data'));
  await spool.init();
  const ids: string[] = [];
  for (let i = 0; i < count; i++) {
    const id = newQueueId(Date.now() + i);
    await spool.acceptBuffer(Buffer.from(`Subject: m${i}\r\n\r\nbody\r\n`), {
      id,
      from: 'app@corp.example',
      originalFrom: 'app@corp.example',
      recipients: [{ address: `u${i}@example.com`, status: 'pending' }],
      source: 'local',
      client: { address: '127.0.0.1' },
      createdAt: Date.now(),
      attempts: 1,
      nextAttemptAt: Date.now() + 3_600_000,
      lastError: 'ECONNREFUSED',
    });
    ids.push(id);
  }
  return { spool, ids };
}

/** A stand-in for the relay's DeliveryQueue that records what it was told. */
function fakeQueue(inFlight: Set<string>) {
  const calls: string[] = [];
  return {
    calls,
    retryNow: (ids?: string[]) => (calls.push(`retry ${ids?.join(',')}`), ids?.length ?? 0),
    forget: (id: string) => void calls.push(`forget ${id}`),
    isInFlight: (id: string) => inFlight.has(id),
    enqueue: (id: string) => void calls.push(`enqueue ${id}`),
  };
}

describe('queue admin', () => {
  test('delete waits for a delivery in progress, then forgets and removes the message', async () => {
    const { spool, ids } = await spoolWith(2);
    const inFlight = new Set([ids[0]!]);
    const queue = fakeQueue(inFlight);
    const admin = new QueueAdmin(spool, queue, 5_000);
    const deleting = admin.delete({ ids: [ids[0]!] });
    await new Promise((r) => setTimeout(r, 150));
    assert.ok(await spool.read(ids[0]!), 'removed while its delivery was still in progress');
    inFlight.clear();
    const result = await deleting;
    assert.deepEqual(result.done, [ids[0]]);
    assert.equal(await spool.read(ids[0]!), undefined);
    assert.ok(queue.calls.includes(`forget ${ids[0]}`));
    assert.deepEqual(await spool.list(), [ids[1]]);
  });

  test('delete refuses when the delivery does not end in time, and leaves the message', async () => {
    const { spool, ids } = await spoolWith(1);
    const admin = new QueueAdmin(spool, fakeQueue(new Set(ids)), 100);
    await assert.rejects(
      admin.delete({ ids }),
      (err: unknown) => err instanceof ControlRefusal && /being delivered/.test(err.message),
    );
    assert.ok(await spool.read(ids[0]!));
  });

  test('retry --all asks the running queue; offline it makes them due now', async () => {
    const { spool, ids } = await spoolWith(2);
    const queue = fakeQueue(new Set());
    const live = await new QueueAdmin(spool, queue).retry({ all: true });
    assert.deepEqual(live.done, ids);
    assert.deepEqual(queue.calls, [`retry ${ids.join(',')}`]);

    const offline = await new QueueAdmin(spool).retry({ ids: [ids[0]!, newQueueId()] });
    assert.deepEqual(offline.done, [ids[0]]);
    assert.equal(offline.missing.length, 1);
    assert.ok((await spool.read(ids[0]!))!.nextAttemptAt <= Date.now());
    assert.ok((await spool.read(ids[1]!))!.nextAttemptAt > Date.now());
  });

  test('dead letters: listed, requeued (and handed to the queue), deleted', async () => {
    const { spool, ids } = await spoolWith(2);
    for (const id of ids) await spool.moveToFailed((await spool.read(id))!, '550 no such user');
    const queue = fakeQueue(new Set());
    const admin = new QueueAdmin(spool, queue);
    assert.deepEqual(
      (await admin.failed()).map((d) => d.id),
      ids,
    );
    const dead = await admin.show(ids[1]!);
    assert.equal(dead.where, 'failed');
    assert.equal((dead.entry as DeadLetter).reason, '550 no such user');
    assert.match(dead.headers, /^Subject: m1$/);
    assert.deepEqual((await admin.requeue([ids[0]!])).done, [ids[0]]);
    assert.ok(queue.calls.includes(`enqueue ${ids[0]}`));
    assert.equal((await spool.read(ids[0]!))!.recipients[0]!.status, 'pending');
    assert.deepEqual((await admin.delete({ ids: [ids[1]!] })).done, [ids[1]]);
    assert.deepEqual(await admin.failed(), []);
    assert.deepEqual((await admin.delete({ ids: [ids[1]!] })).missing, [ids[1]], 'gone for good');
    await assert.rejects(admin.show(ids[1]!), ControlRefusal);
    assert.match((await admin.show(ids[0]!)).headers, /^Subject: m0$/);
  });

  test('requeue by filter or --all reaches the dead letters only', async () => {
    const { spool, ids } = await spoolWith(3);
    for (const id of ids.slice(0, 2)) await spool.moveToFailed((await spool.read(id))!, '550 no such user');
    const admin = new QueueAdmin(spool, fakeQueue(new Set()));
    // The third message is queued, not dead: --all leaves it alone.
    assert.deepEqual((await admin.match('requeue', { all: true })).sort(), ids.slice(0, 2).sort());
    const done = await admin.requeue({ filter: { from: 'nobody-matches@*' } });
    assert.deepEqual(done.done, []);
    assert.deepEqual((await admin.requeue({ all: true })).done.sort(), ids.slice(0, 2).sort());
    assert.deepEqual(await admin.failed(), []);
  });
});

describe('control socket', () => {
  test('owner-only socket; results, refusals and unknown commands come back; no relay is told apart', async () => {
    const dir = await makeTempDir('control');
    const socketPath = path.join(dir, 'control.sock');
    await assert.rejects(
      controlRequest(socketPath, 'ping'),
      (err: unknown) => err instanceof RelayNotRunning,
    );

    const server = new ControlServer(socketPath, silentLogger());
    server.registerHandler('echo', (args) => ({ got: args }));
    server.registerHandler('no', () => {
      throw new ControlRefusal('not today');
    });
    await server.listen();
    try {
      assert.equal((await fs.stat(socketPath)).mode & 0o777, 0o600);
      assert.deepEqual(await controlRequest(socketPath, 'echo', { a: 1 }), { got: { a: 1 } });
      await assert.rejects(
        controlRequest(socketPath, 'no'),
        (err: unknown) =>
          err instanceof ControlError && err.code === 'refused' && err.message === 'not today',
      );
      await assert.rejects(
        controlRequest(socketPath, 'nope'),
        (err: unknown) => err instanceof ControlError && err.code === 'unknown',
      );
      // A second server on the same socket is refused rather than stealing it.
      await assert.rejects(new ControlServer(socketPath, silentLogger()).listen(), /another process answers/);
    } finally {
      await server.close();
    }
    await assert.rejects(fs.stat(socketPath), /ENOENT/);
  });
});

describe('queue admin: hold, release and filters', () => {
  test('hold takes a message out of the running schedule, release puts it back and retries it now', async () => {
    const { spool, ids } = await spoolWith(2);
    const inFlight = new Set<string>();
    const queue = fakeQueue(inFlight);
    const admin = new QueueAdmin(spool, queue);
    assert.deepEqual((await admin.hold({ ids: [ids[0]!] })).done, [ids[0]]);
    assert.ok(queue.calls.includes(`forget ${ids[0]}`));
    assert.deepEqual(await spool.list(), [ids[1]]);
    const rows = await admin.list();
    assert.deepEqual(
      rows.map((r) => [r.id, r.state]),
      [
        [ids[1], 'deferred'],
        [ids[0], 'held'],
      ],
    );
    assert.equal((await admin.show(ids[0]!)).where, 'held');
    assert.match((await admin.show(ids[0]!)).headers, /^Subject: m0$/);
    // A held message is not retried, even by id.
    const retried = await admin.retry({ ids: [ids[0]!] });
    assert.deepEqual(retried.done, []);
    assert.match(retried.skipped?.[0]?.reason ?? '', /on hold/);
    queue.calls.length = 0;
    await admin.retry({ all: true });
    assert.deepEqual(queue.calls, [`retry ${ids[1]}`]);
    // Release: back in queue/, forced now.
    queue.calls.length = 0;
    assert.deepEqual((await admin.release({ all: true })).done, [ids[0]]);
    assert.deepEqual(queue.calls, [`retry ${ids[0]}`]);
    assert.deepEqual(await spool.list(), ids);
    assert.deepEqual((await admin.release({ ids: [ids[0]!] })).missing, [ids[0]]);
  });

  test('offline, a released message is made due now', async () => {
    const { spool, ids } = await spoolWith(1);
    const admin = new QueueAdmin(spool);
    await admin.hold({ all: true });
    assert.deepEqual(await spool.list(), []);
    await admin.release({ ids });
    assert.ok((await spool.read(ids[0]!))!.nextAttemptAt <= Date.now());
  });

  test('filters pick the messages; ids with a filter keep only those that match; a bad filter is refused', async () => {
    const { spool, ids } = await spoolWith(3);
    const admin = new QueueAdmin(spool, fakeQueue(new Set()));
    assert.deepEqual(await admin.match('delete', { filter: { to: 'U1@EXAMPLE.COM' } }), [ids[1]]);
    assert.deepEqual(await admin.match('delete', { ids: [ids[0]!, ids[1]!], filter: { to: 'u[01]*' } }), []);
    assert.deepEqual(await admin.match('delete', { ids: [ids[0]!, ids[2]!], filter: { to: 'u?@*' } }), [
      ids[0],
      ids[2],
    ]);
    assert.deepEqual(await admin.match('hold', { all: true, filter: { olderThan: 3_600_000 } }), []);
    await admin.hold({ filter: { to: 'u2@*' } });
    assert.deepEqual(await admin.match('release', { all: true }), [ids[2]]);
    assert.deepEqual(
      (await admin.list({ state: ['held'] })).map((r) => r.id),
      [ids[2]],
    );
    await admin.delete({ filter: { to: 'u0@*' } });
    assert.deepEqual(
      (await admin.list()).map((r) => r.id),
      [ids[1], ids[2]],
    );
    await assert.rejects(admin.list({ state: ['asleep' as 'held'] }), ControlRefusal);
    await assert.rejects(admin.delete({}), /expected queue ids, a filter or "all"/);
    // Dead letters only when asked for.
    await spool.moveToFailed((await spool.read(ids[1]!))!, '550 no');
    assert.deepEqual(await admin.match('delete', { all: true }), [ids[2]]);
    assert.deepEqual(await admin.match('delete', { all: true, filter: { state: ['failed'] } }), [ids[1]]);
  });
});
