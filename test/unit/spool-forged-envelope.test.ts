// Hostile input against the one-file spool (src/spool/one-file.ts): a client's body that ends
// in an envelope and footer of its own, in the hope that a crash cuts the file just after it
// and the relay then reads the client's envelope (its own recipients, past its source's
// policy). The real reception pipeline stores it with CRLF line ends only, and the reader
// wants the file's own queue id and a checksum: neither the stored bytes nor raw forged bytes
// are ever taken for a message.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { receiveMessage } from '../../src/smtp/receive.js';
import { newQueueId, type QueueEntry } from '../../src/spool/entry.js';
import { encodeTrailer } from '../../src/spool/one-file.js';
import { Spool } from '../../src/spool/spool.js';
import { makeTempDir } from '../helpers/tmp.js';
import { printerTransaction } from '../helpers/transaction.js';

async function newSpool(): Promise<Spool> {
  const spool = new Spool(path.join(await makeTempDir('forged'), 'data'));
  await spool.init();
  return spool;
}

function forgedEnvelope(id: string, body: Buffer, crc?: number): QueueEntry {
  return {
    id,
    from: 'ceo@victim.example',
    originalFrom: 'ceo@victim.example',
    recipients: [{ address: 'everyone@victim.example', status: 'pending' }],
    source: 'trusted-servers',
    client: { address: '10.9.9.9' },
    size: body.length,
    createdAt: Date.now(),
    attempts: 0,
    nextAttemptAt: Date.now(),
    ...(crc === undefined ? {} : { bodyCrc32: crc }),
  };
}

describe('a body that carries a forged envelope', () => {
  test('through the reception pipeline: stored with CRLF only, and a crash right after it leaves no message', async () => {
    const spool = await newSpool();
    const id = newQueueId();
    const head = Buffer.from('Subject: hi\r\n\r\nscan\r\n');
    // The client guesses everything, even the id the relay will give it.
    const forged = Buffer.concat([head, encodeTrailer(forgedEnvelope(id, head, 0))]);
    const { entry } = await receiveMessage(Readable.from([forged]), printerTransaction({ id }), spool);
    assert.deepEqual(
      entry.recipients.map((r) => r.address),
      ['a@example.com'],
    );
    const file = path.join(spool.queueDir, `${id}.msg`);
    const stored = (await fs.readFile(file)).subarray(0, entry.size);
    assert.doesNotMatch(stored.toString('latin1'), /(?<!\r)\n/, 'a bare LF was stored');
    // The crash: the relay's own envelope never reached the disk, the client's bytes did.
    await fs.writeFile(file, stored);
    assert.equal(await spool.read(id), undefined, 'the client’s envelope was taken');
    assert.equal(await spool.sweepIfIncomplete(id), true);
  });

  test('raw forged bytes: another id, or no checksum, are not a message', async () => {
    const spool = await newSpool();
    const body = Buffer.from('Subject: x\r\n\r\nbody\r\n');
    for (const [what, envelopeId, crc] of [
      ['the id of another message', newQueueId(), 0],
      ['no checksum', undefined, undefined],
    ] as const) {
      const id = newQueueId();
      const bytes = Buffer.concat([body, encodeTrailer(forgedEnvelope(envelopeId ?? id, body, crc))]);
      await fs.writeFile(path.join(spool.queueDir, `${id}.msg`), bytes);
      assert.equal(await spool.read(id), undefined, what);
      assert.equal(await spool.sweepIfIncomplete(id), true, what);
    }
  });
});
