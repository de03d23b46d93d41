// Acceptance 1 of issue 2: with no upstream configured the relay runs in capture mode, and a
// message sent to it lands in <spool>/outbox/<id>.eml with its envelope in <id>.json.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sendMail } from '../helpers/client.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { header, queuedIds, waitUntil } from './relay-common.js';

describe('relay: capture mode (no upstream)', () => {
  let relay: Relay;

  before(async () => {
    relay = await startRelay({ config: {} });
  });

  after(async () => {
    await relay?.stop();
  });

  test('says so loudly at start-up', async () => {
    await relay.waitForOutput(/CAPTURE MODE/);
  });

  test('a message sent lands in outbox/<id>.eml with its envelope in <id>.json', async () => {
    const sent = await sendMail({
      port: relay.port,
      from: 'scanner@corp.example',
      to: ['alice@example.com', 'bob@example.com'],
      subject: 'capture me',
      text: 'A scanned page.\n',
    });
    assert.ok(sent.ok, `the relay refused the message: ${sent.response}`);
    const id = sent.queueId;
    assert.ok(id, `no queue id in the reply ${sent.response}`);
    assert.match(sent.response, /^250 2\.0\.0 /);

    const outbox = path.join(relay.spoolDir, 'outbox');
    const metaFile = path.join(outbox, `${id}.json`);
    const bodyFile = path.join(outbox, `${id}.eml`);
    await waitUntil(`${metaFile}`, () =>
      fs.access(metaFile).then(
        () => true,
        () => false,
      ),
    );
    const envelope = JSON.parse(await fs.readFile(metaFile, 'utf8')) as Record<string, unknown>;
    assert.equal(envelope.from, 'scanner@corp.example');
    assert.deepEqual(envelope.to, ['alice@example.com', 'bob@example.com']);

    const body = await fs.readFile(bodyFile);
    assert.equal(header(body, 'subject'), 'capture me');
    assert.match(body.toString('latin1'), /^Received: from client\.test \(\[127\.0\.0\.1\]\)/);
    assert.match(body.toString('latin1'), /\r\n\r\nA scanned page\.\r\n$/);
    // Captured means done: nothing is left in the queue.
    await waitUntil('an empty queue', async () => (await queuedIds(relay.spoolDir)).length === 0);
  });

  test('the README example: swaks --server 127.0.0.1:<port> --to a@b.example', async (t) => {
    const run = (args: string[]) =>
      new Promise<{ code: number | null; out: string }>((resolve) => {
        execFile('swaks', args, { timeout: 20_000 }, (err, stdout, stderr) =>
          resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, out: `${stdout}${stderr}` }),
        );
      });
    const probe = await run(['--version']);
    if (probe.code !== 0) {
      t.skip('swaks is not installed');
      return;
    }
    const result = await run([
      '--server',
      `127.0.0.1:${relay.port}`,
      '--helo',
      'swaks.test',
      '--from',
      'swaks@corp.example',
      '--to',
      'a@b.example',
      '--header',
      'Subject: from swaks',
    ]);
    assert.equal(result.code, 0, result.out);
    const id = /queued as (\S+)/.exec(result.out)?.[1];
    assert.ok(id, result.out);
    const outbox = path.join(relay.spoolDir, 'outbox');
    await waitUntil('the swaks message in the outbox', async () =>
      (await fs.readdir(outbox)).includes(`${id}.json`),
    );
    const envelope = JSON.parse(await fs.readFile(path.join(outbox, `${id}.json`), 'utf8')) as {
      to: string[];
    };
    assert.deepEqual(envelope.to, ['a@b.example']);
    assert.equal(header(await fs.readFile(path.join(outbox, `${id}.eml`)), 'subject'), 'from swaks');
  });
});
