// The maildrop is hostile input: any local user allowed to write <spool>/maildrop/ can put
// anything there. The relay must take only well-formed, complete files written by sendmail,
// follow no symbolic link (to a file of its own, or one that would look like mail), take no
// hard link, not hang on a FIFO, survive garbage and a folder planted under a valid name, refuse
// what is too large, and never pick up a file still being written (a `.tmp-` name).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { promises as fs, readdirSync } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { headerLine, newDropName, sizeField, MAGIC } from '../../src/maildrop/format.js';
import { writeDrop } from '../../src/maildrop/writer.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { makeTempDir, startRelay, type Relay } from '../helpers/relay.js';
import { events } from '../e2e/upstream-common.js';
import { filesIn, upstreamFor, waitUntil } from './common.js';

/** A complete maildrop file's bytes (as writer.ts makes them), with the length field filled in. */
function dropBytes(message: string, recipients = ['victim@example.com'], declared?: number): Buffer {
  const body = Buffer.from(message);
  const head = headerLine({ from: 'attacker@corp.example', recipients });
  sizeField(declared ?? body.length).copy(head, MAGIC.length);
  return Buffer.concat([head, body]);
}

describe('maildrop: hostile files', () => {
  let esp: Esp;
  let relay: Relay;
  let maildrop: string;
  let outside: string;

  before(async () => {
    esp = await startEsp();
    relay = await startRelay({
      config: { upstream: upstreamFor(esp), limits: { maxMessageSize: '64KB' } },
    });
    maildrop = path.join(relay.spoolDir, 'maildrop');
    outside = await makeTempDir('smarthost-outside');
  });

  after(async () => {
    await relay?.stop();
    await esp?.close();
  });

  test('only complete, well-formed regular files are taken; the rest is removed and logged', async () => {
    await relay.stop();
    const plant = (name: string, data: Buffer | string) => fs.writeFile(path.join(maildrop, name), data);
    // A file that would be mail if followed: outside the maildrop, reached by a link.
    const secret = path.join(outside, 'secret.msg');
    await fs.writeFile(secret, dropBytes('Subject: LEAKED via symlink\n\nsecret\n'));
    const hardSource = path.join(relay.spoolDir, 'hard.msg');
    await fs.writeFile(hardSource, dropBytes('Subject: LEAKED via hard link\n\nsecret\n'));
    const names = {
      garbage: newDropName(),
      truncated: newDropName(),
      addedTo: newDropName(),
      tooLarge: newDropName(),
      overLimit: newDropName(),
      badJson: newDropName(),
      noRecipients: newDropName(),
      symlink: newDropName(),
      hardLink: newDropName(),
      fifo: newDropName(),
      folder: newDropName(),
      longHeader: newDropName(),
    };
    await plant(names.garbage, Buffer.from([0, 1, 2, 255, 10, 13, 0, 0]));
    await plant(names.truncated, dropBytes('Subject: truncated\n\nonly part of it', undefined, 10_000));
    await plant(names.addedTo, dropBytes('Subject: added to\n\nmore than declared\n', undefined, 5));
    // Larger than any message the relay takes (plus the header line allowance): never read.
    await plant(names.tooLarge, dropBytes(`Subject: huge\n\n${'x'.repeat(700 * 1024)}\n`));
    // Over the 64KB limit, well formed: refused by the policy (552), removed.
    await plant(names.overLimit, dropBytes(`Subject: over the limit\n\n${'y'.repeat(80 * 1024)}\n`));
    await plant(names.badJson, `${MAGIC}${'0'.repeat(12)} {"from":\n`);
    await plant(
      names.noRecipients,
      Buffer.from(`${MAGIC}000000000002 {"from":"a@b.example","recipients":[]}\nhi`),
    );
    await fs.symlink(secret, path.join(maildrop, names.symlink));
    await fs.link(hardSource, path.join(maildrop, names.hardLink));
    execFileSync('mkfifo', [path.join(maildrop, names.fifo)]);
    // A folder with something in it cannot be removed: it must be skipped, not loop or crash.
    await fs.mkdir(path.join(maildrop, names.folder));
    await fs.writeFile(path.join(maildrop, names.folder, 'inside'), 'x');
    await plant(names.longHeader, dropBytes(`Subject: ${'z'.repeat(5000)}\n\nbody\n`));
    await plant('notes.txt', 'not a maildrop name');
    // Still being written: a temp name is never picked up, however complete it looks.
    const temp = '.tmp-0123456789abcdef01234567';
    await plant(temp, dropBytes('Subject: LEAKED from a temp file\n\nnot yet\n'));
    // And one real message, written as sendmail writes it.
    await writeDrop(
      maildrop,
      { from: 'cron@corp.example', recipients: ['ops@example.com'] },
      (async function* () {
        yield Buffer.from('Subject: the real one\n\nhello\n');
      })(),
    );

    await relay.restart();
    await esp.waitFor(1);
    const left = await waitUntil(
      () => `the hostile files removed: ${readdirSync(maildrop).join(' ')}\n${relay.output().slice(-3000)}`,
      async () => {
        const files = await filesIn(maildrop);
        return files.length === 2 ? files : undefined;
      },
    );
    assert.deepEqual(left.sort(), [temp, names.folder].sort());
    // Give a wrong pick-up time to show (the poll runs every 5 s; the watcher at once).
    await new Promise((resolve) => setTimeout(resolve, 6_000));
    assert.equal(
      esp.messages.length,
      1,
      esp.messages.map((m) => m.raw.toString().slice(0, 200)).join('\n---\n'),
    );
    assert.match(esp.messages[0]!.raw.toString(), /Subject: the real one/);
    assert.deepEqual(esp.messages[0]!.to, ['ops@example.com']);
    // The link targets are untouched, and the relay is still up.
    assert.ok(await fs.stat(secret));
    assert.ok(await fs.stat(hardSource));
    assert.ok(relay.running);
    const discarded = events(relay, 'maildrop_discarded').map((e) => String(e.reason));
    for (const why of [
      'symbolic link',
      'hard link',
      'not a regular file',
      'too large',
      'cut short or added to',
      'not JSON',
      'not a maildrop file name',
      'not a maildrop file (no SMARTHOST',
    ]) {
      assert.ok(
        discarded.some((d) => d.includes(why)),
        `a discard for "${why}" in: ${discarded.join(' | ')}`,
      );
    }
    const refused = events(relay, 'refused').map((e) => String(e.reason));
    assert.ok(refused.includes('size'), refused.join(','));
    assert.ok(refused.includes('header_line_too_long'), refused.join(','));
  });

  test('while running: a planted symlink is not followed, a new file is taken at once', async () => {
    esp.reset();
    const secret = path.join(outside, 'secret2.msg');
    await fs.writeFile(secret, dropBytes('Subject: LEAKED again\n\nsecret\n'));
    await fs.symlink(secret, path.join(maildrop, newDropName()));
    await writeDrop(
      maildrop,
      { from: 'cron@corp.example', recipients: ['ops@example.com'] },
      (async function* () {
        yield Buffer.from('Subject: second real one\n\nhello\n');
      })(),
    );
    await esp.waitFor(1);
    await waitUntil('the symlink removed', async () => (await filesIn(maildrop)).length === 2);
    assert.equal(esp.messages.length, 1);
    assert.match(esp.messages[0]!.raw.toString(), /second real one/);
  });
});
