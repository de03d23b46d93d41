// DATA into the spool: size guard, line-ending and header hygiene, and the failure paths
// (too big, the client hanging up, the disk failing), each ending with nothing half-written.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { PassThrough, Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { SmtpError } from '../../src/smtp/errors.js';
import { receiveMessage } from '../../src/smtp/receive.js';
import { SizeGuard } from '../../src/smtp/size-guard.js';
import { Spool } from '../../src/spool/spool.js';
import { makeTempDir } from '../helpers/tmp.js';
import { storedBody } from '../helpers/stored-body.js';
import { printerTransaction } from '../helpers/transaction.js';

const tx = printerTransaction;

async function newSpool(): Promise<Spool> {
  const spool = new Spool(path.join(await makeTempDir('receive'), 'data'));
  await spool.init();
  return spool;
}

const ls = async (dir: string) => (await fs.readdir(dir)).sort();

/** A client's DATA stream fed in pieces. */
function client(chunks: string[]): Readable {
  return Readable.from(chunks.map((c) => Buffer.from(c, 'latin1')));
}

describe('SizeGuard', () => {
  async function run(
    limit: number,
    chunks: string[],
  ): Promise<{ out: string; error?: Error; guard: SizeGuard }> {
    const guard = new SizeGuard(limit, () => new Error('too big'));
    const out: Buffer[] = [];
    guard.on('data', (c: Buffer) => out.push(c));
    const error = new Promise<Error | undefined>((resolve) => {
      guard.once('end', () => resolve(undefined));
      guard.once('error', resolve);
    });
    client(chunks).pipe(guard);
    return { error: await error, out: Buffer.concat(out).toString(), guard };
  }

  test('passes a message up to the limit exactly', async () => {
    const r = await run(10, ['12345', '67890']);
    assert.equal(r.out, '1234567890');
    assert.equal(r.error, undefined);
    assert.equal(r.guard.bytes, 10);
  });

  test('one byte more fails at the end, after reading everything, passing nothing past the limit', async () => {
    const r = await run(10, ['12345', '67890', 'X', 'more']);
    assert.equal(r.error?.message, 'too big');
    assert.equal(r.guard.exceeded, true);
    assert.equal(r.guard.bytes, 15, 'the whole input was counted (read to the end)');
    assert.equal(r.out, '1234567890');
  });
});

describe('receiveMessage', () => {
  test('spools the message with the trace line, missing headers and CRLF line ends', async () => {
    const spool = await newSpool();
    const t = tx();
    const queued = await receiveMessage(client(['Subject: hi\n', '\nline one\nline two\r\n']), t, spool);
    const { entry } = queued;
    assert.equal(entry.id, t.id);
    assert.deepEqual(entry.recipients, [{ address: 'a@example.com', status: 'pending' }]);
    assert.equal(entry.source, 'printers');
    const body = (await storedBody(spool, entry)).toString('latin1');
    assert.match(
      body,
      /^Received: from printer \(\[10\.1\.2\.3\]\)\r\n\tby relay\.test \(smarthost\) with ESMTP id /,
    );
    assert.match(
      body,
      /\r\nSubject: hi\r\nDate: [^\r\n]+\r\nMessage-ID: <[^\r\n]+@relay\.test>\r\n\r\nline one\r\nline two\r\n$/,
    );
    assert.doesNotMatch(body, /(?<!\r)\n/, 'no bare LF left');
    assert.equal(entry.size, Buffer.byteLength(body, 'latin1'));
    assert.equal(queued.body?.toString('latin1'), body, 'the queued item carries the bytes written');
  });

  test('applies the transaction’s own header edits', async () => {
    const spool = await newSpool();
    const t = tx({ editHeaders: (h) => h.update('From', 'relay@corp.example') });
    const { entry } = await receiveMessage(
      client(['From: someone@else.example\r\nDate: x\r\nMessage-ID: <a@b>\r\n\r\nb\r\n']),
      t,
      spool,
    );
    assert.match((await storedBody(spool, entry)).toString('latin1'), /\r\nFrom: relay@corp\.example\r\n/);
  });

  test('too big: 552 5.3.4 after reading the whole stream, and nothing kept', async () => {
    const spool = await newSpool();
    const input = client(['Subject: big\r\n\r\n', 'x'.repeat(600), 'y'.repeat(600)]);
    await assert.rejects(receiveMessage(input, tx({ sizeLimit: 1000 }), spool), (err: unknown) => {
      assert.ok(err instanceof SmtpError);
      assert.equal(err.code, 552);
      assert.equal(err.enhanced, '5.3.4');
      return true;
    });
    assert.equal(input.readableEnded, true, 'read to its end, so the SMTP conversation stays in step');
    assert.deepEqual(await ls(spool.tmpDir), []);
    assert.deepEqual(await ls(spool.queueDir), []);
  });

  test(
    'the client hanging up mid-DATA fails the transfer and removes the files it started',
    { timeout: 10_000 },
    async () => {
      const spool = await newSpool();
      const input = new PassThrough();
      const receiving = receiveMessage(input, tx(), spool);
      input.write(Buffer.from(`Subject: cut\r\n\r\n${'z'.repeat(100_000)}`));
      // Wait until the spool has created the message's files and is writing the body.
      for (let i = 0; i < 200 && (await ls(spool.queueDir)).length < 1; i++)
        await new Promise((r) => setTimeout(r, 10));
      assert.equal((await ls(spool.queueDir)).length, 1, 'the spool started writing');
      // What smtp-server does when the connection closes: destroy without an error (no listener).
      input.destroy();
      await assert.rejects(receiving, (err: unknown) => {
        assert.ok(err instanceof SmtpError);
        assert.equal(err.temporary, true);
        return true;
      });
      assert.deepEqual(await ls(spool.tmpDir), []);
      assert.deepEqual(await ls(spool.queueDir), []);
    },
  );

  test('a spool write error: 451 4.3.0, and the client is still read to the end', async () => {
    const spool = await newSpool();
    await fs.rm(spool.queueDir, { recursive: true });
    const input = client(['Subject: x\r\n\r\n', 'body\r\n'.repeat(10_000)]);
    await assert.rejects(receiveMessage(input, tx(), spool), (err: unknown) => {
      assert.ok(err instanceof SmtpError);
      assert.equal(`${err.code} ${err.enhanced}`, '451 4.3.0');
      return true;
    });
    assert.equal(input.readableEnded, true);
  });

  test('a full disk: 452 4.3.1', async () => {
    const fullSpool = {
      async acceptMessage(body: Readable) {
        for await (const _chunk of body) break;
        throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' });
      },
    } as unknown as Spool;
    const input = client(['Subject: x\r\n\r\n', 'body\r\n'.repeat(10_000)]);
    await assert.rejects(receiveMessage(input, tx(), fullSpool), (err: unknown) => {
      assert.ok(err instanceof SmtpError);
      assert.equal(`${err.code} ${err.enhanced}`, '452 4.3.1');
      return true;
    });
    assert.equal(input.readableEnded, true);
  });
});
