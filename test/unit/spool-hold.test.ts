// Messages on hold (src/spool/hold.ts): a move between queue/ and hold/, and what a crash in the
// middle of one leaves: init() reunites each body with its envelope, in either direction, before
// the spool's sweep could take the body for an orphan.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { newQueueId } from '../../src/spool/entry.js';
import { Spool } from '../../src/spool/spool.js';
import { makeTempDir } from '../helpers/tmp.js';

async function spoolWithOne(): Promise<{ spool: Spool; id: string }> {
  const spool = new Spool(path.join(await makeTempDir('hold'), 'data'));
  await spool.init();
  const id = newQueueId();
  const accepted = await spool.acceptBuffer(Buffer.from('Subject: held\r\n\r\nbody\r\n'), {
    id,
    from: 'app@corp.example',
    originalFrom: 'app@corp.example',
    recipients: [{ address: 'a@example.com', status: 'pending' }],
    source: 'test',
    client: { address: '127.0.0.1' },
    createdAt: Date.now(),
    attempts: 0,
    nextAttemptAt: Date.now(),
  });
  // Split into <id>.eml and <id>.json, as a first retry (or a hold) leaves it.
  await spool.update(accepted);
  return { spool, id };
}

const ls = async (dir: string) => (await fs.readdir(dir)).sort();

describe('hold folder', () => {
  test('hold moves both files out of the queue, release moves them back', async () => {
    const { spool, id } = await spoolWithOne();
    assert.equal(await spool.hold(id), true);
    assert.deepEqual(await spool.list(), []);
    assert.deepEqual(await spool.held.ids(), [id]);
    assert.deepEqual(await ls(spool.held.holdDir), [`${id}.eml`, `${id}.json`]);
    assert.equal((await spool.held.read(id))?.id, id);
    assert.equal(await spool.hold(id), false, 'held twice');
    // A restart keeps it held.
    const again = new Spool(spool.dir);
    await again.init();
    assert.deepEqual(await again.list(), []);
    assert.deepEqual(await again.held.ids(), [id]);
    assert.equal(await again.held.release(id), true);
    assert.deepEqual(await again.list(), [id]);
    assert.equal(await again.held.release(id), false, 'released twice');
    assert.equal((await fs.readFile(again.bodyPath(id), 'utf8')).split('\r\n')[0], 'Subject: held');
  });

  for (const [what, envelopeIn, bodyIn] of [
    ['a hold cut short after the envelope moved', 'hold', 'queue'],
    ['a release cut short after the envelope moved', 'queue', 'hold'],
  ] as const) {
    test(`${what}: init reunites the body with its envelope`, async () => {
      const { spool, id } = await spoolWithOne();
      const dirs = { queue: spool.queueDir, hold: spool.held.holdDir };
      for (const [file, where] of [
        [`${id}.json`, envelopeIn],
        [`${id}.eml`, bodyIn],
      ] as const) {
        if (where !== 'queue') await fs.rename(path.join(spool.queueDir, file), path.join(dirs[where], file));
      }
      const restarted = new Spool(spool.dir);
      const swept = await restarted.init();
      assert.equal(swept.reunited, 1);
      assert.equal(swept.orphanBodies, 0, 'the body was swept as an orphan');
      assert.deepEqual(await ls(dirs[envelopeIn]), [`${id}.eml`, `${id}.json`]);
      assert.deepEqual(await ls(dirs[bodyIn]), []);
    });
  }

  test('delete of a held message removes both files', async () => {
    const { spool, id } = await spoolWithOne();
    await spool.hold(id);
    assert.equal(await spool.held.remove(id), true);
    assert.deepEqual(await ls(spool.held.holdDir), []);
    assert.equal(await spool.held.remove(id), false);
  });
});

test('hold works on a spool that has no hold/ yet (made by an older version, relay stopped)', async () => {
  const { spool, id } = await spoolWithOne();
  await fs.rmdir(spool.held.holdDir);
  const offline = new Spool(spool.dir); // as the CLI makes it: no init()
  assert.deepEqual(await offline.held.ids(), []);
  assert.equal(await offline.hold(id), true);
  assert.deepEqual(await offline.held.ids(), [id]);
});
