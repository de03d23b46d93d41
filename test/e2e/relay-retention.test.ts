// Issue 14, retention: the real relay removes dead letters older than retention.failed and
// captured messages older than retention.outbox when it starts (and hourly), says how many in a
// retention_swept line, and keeps the recent ones. Ages come from mtimes set in the past.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sendMail } from '../helpers/client.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { newQueueId } from '../../src/spool/entry.js';
import { filesIn, waitUntil } from './relay-common.js';

const DAY = 86_400_000;

async function age(file: string, ms: number): Promise<void> {
  const when = new Date(Date.now() - ms);
  await fs.utimes(file, when, when);
}

describe('relay: retention of dead letters and captured messages', () => {
  let relay: Relay;

  before(async () => {
    // Capture mode (no upstream); a short outbox retention, the default for failed/ (30d).
    relay = await startRelay({ config: { retention: { outbox: '2d' } } });
  });

  after(async () => {
    await relay?.stop();
  });

  test('at start, old ones are removed and counted; recent ones stay', async () => {
    const outbox = path.join(relay.spoolDir, 'outbox');
    const failed = path.join(relay.spoolDir, 'failed');
    const ids: string[] = [];
    for (const n of [1, 2]) {
      const sent = await sendMail({
        port: relay.port,
        from: 'app@corp.example',
        to: ['a@example.com'],
        subject: `c${n}`,
      });
      assert.ok(sent.ok && sent.queueId, sent.response);
      ids.push(sent.queueId);
    }
    await waitUntil(
      'both captured',
      async () => (await filesIn(outbox)).filter((n) => n.endsWith('.json')).length === 2,
    );
    // The first capture is three days old, the second fresh.
    for (const ext of ['eml', 'json']) await age(path.join(outbox, `${ids[0]}.${ext}`), 3 * DAY);

    // Dead letters: one past the 30-day default, one a day old.
    const oldDead = newQueueId(Date.now() - 40 * DAY);
    const newDead = newQueueId(Date.now() - DAY);
    for (const [id, ms] of [
      [oldDead, 31 * DAY],
      [newDead, DAY],
    ] as const) {
      await fs.writeFile(path.join(failed, `${id}.json`), JSON.stringify({ id, reason: '550 no' }));
      await fs.writeFile(path.join(failed, `${id}.eml`), 'Subject: dead\r\n\r\n');
      for (const ext of ['eml', 'json']) await age(path.join(failed, `${id}.${ext}`), ms);
    }

    await relay.restart();
    const line = await relay.waitForOutput(/^.*"event":"retention_swept".*$/m);
    const fields = JSON.parse(line[0]) as Record<string, unknown>;
    assert.equal(fields.failed, 1);
    assert.equal(fields.outbox, 1);
    assert.equal(fields.failedRetention, '30d');
    assert.equal(fields.outboxRetention, '2d');

    assert.deepEqual(await filesIn(outbox), [`${ids[1]}.eml`, `${ids[1]}.json`]);
    assert.deepEqual(await filesIn(failed), [`${newDead}.eml`, `${newDead}.json`]);
  });
});
