// The scheduler against a scripted courier and a real spool: per-recipient outcomes, retries,
// bounces and dead letters, expiry, and no busy waiting while at the concurrency cap.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { Bouncer } from '../../src/bounce/bouncer.js';
import { parseConfig, type Config } from '../../src/config/load.js';
import type { Courier, RecipientResult } from '../../src/delivery/courier.js';
import { silentLogger } from '../../src/log.js';
import { DeliveryQueue } from '../../src/queue/delivery-queue.js';
import { newQueueId, type QueueEntry } from '../../src/spool/entry.js';
import { Spool } from '../../src/spool/spool.js';
import { makeTempDir } from '../helpers/tmp.js';

type Script = (
  entry: QueueEntry,
  recipients: string[],
  attempt: number,
) => RecipientResult[] | Promise<RecipientResult[]>;

class ScriptedCourier implements Courier {
  readonly description = 'scripted';
  readonly calls: { id: string; from: string; recipients: string[] }[] = [];
  private readonly attempts = new Map<string, number>();
  constructor(private readonly script: Script) {}
  async send(entry: QueueEntry, recipients: string[]): Promise<RecipientResult[]> {
    const n = (this.attempts.get(entry.id) ?? 0) + 1;
    this.attempts.set(entry.id, n);
    this.calls.push({ id: entry.id, from: entry.from, recipients: [...recipients] });
    return this.script(entry, recipients, n);
  }
  async close(): Promise<void> {}
}

const ok = (recipient: string): RecipientResult => ({ recipient, outcome: 'delivered', reply: '250 ok' });
const later = (recipient: string): RecipientResult => ({
  recipient,
  outcome: 'temporary',
  reply: '451 4.3.0 later',
});
const never = (recipient: string): RecipientResult => ({
  recipient,
  outcome: 'permanent',
  reply: '550 5.1.1 no such user',
});

async function setup(script: Script, queue: Record<string, unknown> = {}) {
  const dir = await makeTempDir('queue');
  let configReads = 0;
  const config: Config = parseConfig(
    {
      hostname: 'relay.test',
      queue: { retry: ['50ms'], ...queue },
      bounces: { to: 'postmaster@corp.example' },
    },
    { env: {}, baseDir: dir, source: 'test' },
  );
  const spool = new Spool(path.join(dir, 'data'));
  await spool.init();
  const courier = new ScriptedCourier(script);
  const log = silentLogger();
  const getConfig = () => {
    configReads++;
    return config;
  };
  const dq = new DeliveryQueue({
    spool,
    courier: () => courier,
    bouncer: new Bouncer(spool, getConfig, log),
    log,
    config: getConfig,
  });
  const add = async (from: string, recipients: string[], enqueue = true) => {
    const now = Date.now();
    const entry = await spool.accept(Readable.from([Buffer.from(`Subject: t\r\n\r\nbody\r\n`)]), {
      id: newQueueId(),
      from,
      originalFrom: from,
      recipients: recipients.map((address) => ({ address, status: 'pending' as const })),
      source: 'test',
      client: { address: '127.0.0.1' },
      createdAt: now,
      attempts: 0,
      nextAttemptAt: now,
    });
    if (enqueue) dq.enqueue(entry.id);
    return entry.id;
  };
  const idle = async (timeoutMs = 10_000) => {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      if (dq.active === 0 && (await spool.list()).length === 0) return;
      await new Promise((r) => setTimeout(r, 10));
    }
    throw new Error(`queue not idle: ${(await spool.list()).length} queued, ${dq.active} active`);
  };
  return { dq, spool, courier, add, idle, configReads: () => configReads };
}

describe('DeliveryQueue', { timeout: 60_000 }, () => {
  test('delivers and removes the message', async () => {
    const q = await setup((_e, rcpts) => rcpts.map(ok));
    await q.dq.start();
    const id = await q.add('app@corp.example', ['a@example.com', 'b@example.com']);
    await q.idle();
    assert.deepEqual(q.courier.calls, [
      { id, from: 'app@corp.example', recipients: ['a@example.com', 'b@example.com'] },
    ]);
    assert.deepEqual(await q.spool.failed.list(), []);
    await q.dq.stop();
  });

  test('a recipient delivered once is never sent again; the deferred one is retried', async () => {
    const q = await setup((_e, rcpts, n) =>
      rcpts.map((r) => (r === 'b@example.com' && n < 3 ? later(r) : ok(r))),
    );
    await q.dq.start();
    const id = await q.add('app@corp.example', ['a@example.com', 'b@example.com']);
    await q.idle();
    assert.deepEqual(
      q.courier.calls.map((c) => c.recipients),
      [['a@example.com', 'b@example.com'], ['b@example.com'], ['b@example.com']],
    );
    assert.ok(q.courier.calls.every((c) => c.id === id));
    await q.dq.stop();
  });

  test('a permanent failure bounces to the sender and keeps the message as a dead letter', async () => {
    const q = await setup((_e, rcpts) => rcpts.map((r) => (r === 'bad@example.com' ? never(r) : ok(r))));
    await q.dq.start();
    const id = await q.add('app@corp.example', ['good@example.com', 'bad@example.com']);
    await q.idle();
    const [original, bounce] = q.courier.calls;
    assert.equal(original?.id, id);
    assert.deepEqual(bounce?.recipients, ['app@corp.example'], 'the DSN goes to the envelope sender');
    assert.equal(bounce?.from, '', 'from the null sender');
    assert.equal(q.courier.calls.length, 2);
    const [dead] = await q.spool.failed.list();
    assert.equal(dead?.id, id);
    assert.match(dead!.reason, /bad@example\.com: 550 5\.1\.1/);
    assert.deepEqual(
      dead!.recipients.map((r) => r.status),
      ['delivered', 'failed'],
    );
    await q.dq.stop();
  });

  test('a bounce that bounces is never bounced again: one dead letter each', async () => {
    const q = await setup((_e, rcpts) => rcpts.map(never));
    await q.dq.start();
    await q.add('app@corp.example', ['bad@example.com']);
    await q.idle();
    assert.deepEqual(
      q.courier.calls.map((c) => c.recipients[0]),
      ['bad@example.com', 'app@corp.example'],
    );
    assert.equal((await q.spool.failed.list()).length, 2, 'the message and its bounce, each kept once');
    await q.dq.stop();
  });

  test('past queue.maxAge a deferred recipient fails and is bounced', async () => {
    const q = await setup((_e, rcpts) => rcpts.map(later), { maxAge: '150ms' });
    await q.dq.start();
    const id = await q.add('app@corp.example', ['slow@example.com']);
    await q.idle();
    const attempts = q.courier.calls.filter((c) => c.id === id).length;
    assert.ok(attempts >= 2, `retried before giving up (${attempts} attempts)`);
    const [dead] = await q.spool.failed.list();
    assert.match(dead!.reason, /^expired after \d+ attempts/);
    assert.ok(
      q.courier.calls.some((c) => c.recipients[0] === 'app@corp.example'),
      'the sender is told',
    );
    await q.dq.stop();
  });

  test('at the concurrency cap the queue waits without spinning', async () => {
    let release!: () => void;
    const gate = new Promise<void>((resolve) => (release = resolve));
    const q = await setup(
      async (_e, rcpts) => {
        await gate;
        return rcpts.map(ok);
      },
      { concurrency: 1 },
    );
    await q.dq.start();
    try {
      for (let i = 0; i < 3; i++) await q.add('app@corp.example', [`r${i}@example.com`]);
      const before = q.configReads();
      await new Promise((r) => setTimeout(r, 300));
      const during = q.configReads() - before;
      assert.equal(q.dq.active, 1);
      // A busy loop re-arms a 0 ms timer and reads the config each time: hundreds in 300 ms.
      assert.ok(during < 20, `the scheduler woke ${during} times while blocked`);
      release();
      await q.idle();
      assert.equal(q.courier.calls.length, 3);
    } finally {
      release();
      await q.dq.stop();
    }
  });

  test('start resumes what is in the spool', async () => {
    const q = await setup((_e, rcpts) => rcpts.map(ok));
    // Queued before the scheduler runs (as after a restart).
    await q.add('app@corp.example', ['a@example.com'], false);
    await q.add('app@corp.example', ['b@example.com'], false);
    assert.equal(q.courier.calls.length, 0);
    assert.equal(await q.dq.start(), 2);
    await q.idle();
    assert.equal(q.courier.calls.length, 2);
    await q.dq.stop();
  });
  test('after a restart: a body cut short by the crash is never sent, a half-received message is swept', async () => {
    const q = await setup((_e, rcpts) => rcpts.map(ok));
    const whole = await q.add('app@corp.example', ['a@example.com'], false);
    const cut = await q.add('app@corp.example', ['b@example.com'], false);
    // Queued before the scheduler runs, by id (as after a restart): everything is read from the disk.
    // Its envelope reached the disk, the start of its body did not (pages go in any order).
    const cutFile = await fs.open(path.join(q.spool.queueDir, `${cut}.msg`), 'r+');
    await cutFile.write(Buffer.alloc(5), 0, 5, 0);
    await cutFile.close();
    // Receptions the crash interrupted: a .msg with no envelope yet, and (an older version's
    // layout) a body whose envelope was still empty.
    const torn = newQueueId();
    await fs.writeFile(path.join(q.spool.queueDir, `${torn}.msg`), 'Subject: torn\r\n');
    const half = newQueueId();
    await fs.writeFile(path.join(q.spool.queueDir, `${half}.eml`), 'Subject: half');
    await fs.writeFile(path.join(q.spool.queueDir, `${half}.json`), '');
    assert.equal(await q.dq.start(), 4);
    await q.idle();
    assert.deepEqual(
      q.courier.calls.map((c) => c.id),
      [whole],
      'only the complete message went to the courier',
    );
    const failed = await q.spool.failed.list();
    assert.deepEqual(
      failed.map((f) => f.id),
      [cut],
    );
    assert.match(failed[0]!.reason, /does not match its checksum/);
    assert.deepEqual(await fs.readdir(q.spool.queueDir), [], 'the half-received messages were swept');
    await q.dq.stop();
  });
});
