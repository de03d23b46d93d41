// The relay's life around the data path (issue 2): SIGTERM lets an open session finish and
// exits 0; a restart resumes what was queued and sweeps what a crash left; a message over the
// size limit is refused; a failing disk answers 452 4.3.1 (full) or 451 4.3.0 (other write
// error) and leaves no partial file, and the relay recovers once the disk does.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sendMail } from '../helpers/client.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { makeTempDir, startRelay, type Relay } from '../helpers/relay.js';
import {
  connectionRefused,
  explained,
  filesIn,
  header,
  openConversation,
  queuedIds,
  sleep,
  upstreamFor,
  waitUntil,
} from './relay-common.js';

const KB = 1024;

/** A message of about `size` bytes of 78-byte lines. */
function sizedMessage(subject: string, size: number): string {
  return `Subject: ${subject}\r\n\r\n${`${'y'.repeat(76)}\r\n`.repeat(Math.ceil(size / 78))}`;
}

describe('relay: SIGTERM', () => {
  let relay: Relay;

  before(async () => {
    relay = await startRelay({ config: { shutdown: { grace: '20s' } } });
  });

  after(async () => {
    await relay?.stop();
  });

  test('stops accepting, lets a session in the middle of a message finish it, exits 0; the message is kept', async () => {
    const idle = await openConversation(relay.port);
    assert.match(await idle.command('EHLO idle.test'), /^250/);
    const session = await openConversation(relay.port);
    assert.match(session.greeting, /^220 /);
    assert.match(await session.command('EHLO device.test'), /^250/);
    assert.match(await session.command('MAIL FROM:<device@corp.example>'), /^250/);
    assert.match(await session.command('RCPT TO:<someone@example.com>'), /^250/);

    const since = relay.output().length;
    const stopping = relay.stop(30_000);
    await relay.waitForOutput(/"event":"stopping"/, 10_000, { since });
    await waitUntil('the listening socket to close', () => connectionRefused(relay.port), 10_000);
    // A session between messages is told to come back later and closed at once...
    await idle.closed;
    assert.equal(relay.running, true, 'still running while a session is in the middle of a message');

    // ...while one in the middle of its envelope may go on to DATA and finish the message.
    assert.match(await session.command('DATA'), /^354/);
    const reply = await session.command('Subject: finished during shutdown\r\n\r\nstill here\r\n.');
    const id = /^250 2\.0\.0 Ok: queued as (\S+)/.exec(reply)?.[1];
    assert.ok(id, `the open session's message must be accepted, got ${reply}`);
    // Between messages now: the session is ended (QUIT answered, or the 421 already sent).
    assert.match(await session.command('QUIT').catch(() => '421 closed'), /^(221|421) /);
    await session.closed;
    assert.equal(await stopping, 0, 'exit code 0');

    // Accepted means on disk: either captured already or still in the queue.
    const outbox = await filesIn(path.join(relay.spoolDir, 'outbox'));
    const queued = await queuedIds(relay.spoolDir);
    assert.ok(
      outbox.includes(`${id}.eml`) || queued.includes(id),
      `message ${id} is neither captured nor queued`,
    );
    await relay.restart();
    await waitUntil('the message in the outbox', async () =>
      (await filesIn(path.join(relay.spoolDir, 'outbox'))).includes(`${id}.json`),
    );
  });
});

describe('relay: restart', () => {
  let esp: Esp;
  let relay: Relay;

  before(async () => {
    esp = await startEsp();
    relay = await startRelay({ config: { upstream: upstreamFor(esp), queue: { retry: ['1s'] } } });
  });

  after(async () => {
    await relay?.stop();
    await esp?.close();
  });

  test('resumes the queued messages and sweeps the leftovers of an interrupted run', async () => {
    await esp.stop();
    const ids: string[] = [];
    for (let i = 0; i < 3; i++) {
      const sent = await sendMail({
        port: relay.port,
        from: 'app@corp.example',
        to: ['user@example.com'],
        subject: `resume-${i}`,
      });
      assert.ok(sent.ok, sent.response);
      ids.push(sent.queueId!);
    }
    await relay.waitForOutput(/"event":"deferred"/);
    assert.equal(await relay.stop(), 0);
    assert.deepEqual((await queuedIds(relay.spoolDir)).sort(), [...ids].sort(), 'all three still queued');

    // What a crash can leave: a temp file, and a body whose envelope never made it (no 250).
    const tmpLeftover = path.join(relay.spoolDir, 'tmp', 'LEFTOVER.1234.1.eml');
    const orphan = path.join(relay.spoolDir, 'queue', '0ZZZZZZZZ0123456789.eml');
    await fs.writeFile(tmpLeftover, 'half a message');
    await fs.writeFile(orphan, 'Subject: orphan\r\n\r\nno envelope\r\n');

    await esp.start();
    await relay.restart();
    await explained(relay, esp.waitFor(3));
    // Bodies go after their envelopes: wait for both.
    await waitUntil(
      'an empty queue/',
      async () => (await filesIn(path.join(relay.spoolDir, 'queue'))).length === 0,
    );
    await sleep(1000); // and nothing else (the orphan) arrives
    assert.deepEqual(esp.messages.map((m) => header(m.raw, 'subject')).sort(), [
      'resume-0',
      'resume-1',
      'resume-2',
    ]);
    assert.deepEqual(await filesIn(path.join(relay.spoolDir, 'tmp')), []);
    assert.deepEqual(await filesIn(path.join(relay.spoolDir, 'queue')), []);
    assert.ok(
      !esp.messages.some((m) => header(m.raw, 'subject') === 'orphan'),
      'an unacknowledged body is never sent',
    );
  });
});

describe('relay: refusals and failures while receiving', () => {
  let relay: Relay;

  before(async () => {
    relay = await startRelay({ config: { limits: { maxMessageSize: '1MB' } } });
  });

  after(async () => {
    await relay?.stop();
  });

  test('a message over limits.maxMessageSize is refused with 552 5.3.4 and nothing is kept', async () => {
    const sent = await sendMail({
      port: relay.port,
      from: 'scanner@corp.example',
      to: ['a@example.com'],
      raw: sizedMessage('too-big', 1200 * KB),
    });
    assert.equal(sent.ok, false);
    assert.ok(!sent.ok);
    assert.equal(sent.code, 552, sent.response);
    assert.match(sent.response, /5\.3\.4/);
    assert.deepEqual(await filesIn(path.join(relay.spoolDir, 'tmp')), []);
    assert.deepEqual(await queuedIds(relay.spoolDir), []);
  });

  test('a client that hangs up in the middle of DATA leaves no partial file and no open transaction', async () => {
    const session = await openConversation(relay.port);
    assert.match(await session.command('EHLO device.test'), /^250/);
    assert.match(await session.command('MAIL FROM:<device@corp.example>'), /^250/);
    assert.match(await session.command('RCPT TO:<someone@example.com>'), /^250/);
    assert.match(await session.command('DATA'), /^354/);
    session.write(`Subject: cut off\r\n\r\n${'z'.repeat(76)}\r\n`.repeat(200));
    // The spool creates the message's .msg in queue/ when DATA starts (without its envelope it
    // is not a message yet: nothing delivers it).
    const queue = path.join(relay.spoolDir, 'queue');
    await waitUntil(
      'the message being written in queue/',
      async () => (await filesIn(queue)).length > 0,
      10_000,
    );
    session.destroy();
    await waitUntil('queue/ to be cleaned up', async () => (await filesIn(queue)).length === 0, 10_000);
    assert.deepEqual(await filesIn(path.join(relay.spoolDir, 'tmp')), []);
    assert.deepEqual(await queuedIds(relay.spoolDir), []);
    // The relay is still fine.
    const small = await sendMail({ port: relay.port, from: 'scanner@corp.example', to: ['a@example.com'] });
    assert.ok(small.ok, small.response);
    // Delivered (captured) and gone from queue/ before the next test looks at queue/.
    await waitUntil('queue/ empty again', async () => (await filesIn(queue)).length === 0, 10_000);
  });

  test('a write error (file size limit, EFBIG) answers 451 4.3.0 and leaves no partial file', async (t) => {
    const pid = relay.process.pid!;
    try {
      // RLIMIT_FSIZE on the running relay: writes past 256 KB fail (Node ignores SIGXFSZ).
      execFileSync('prlimit', ['--pid', String(pid), `--fsize=${256 * KB}:${256 * KB}`], { stdio: 'pipe' });
    } catch (err) {
      t.skip(`prlimit is not available here: ${(err as Error).message.split('\n')[0]}`);
      return;
    }
    const sent = await sendMail({
      port: relay.port,
      from: 'scanner@corp.example',
      to: ['a@example.com'],
      raw: sizedMessage('efbig', 600 * KB),
    });
    assert.equal(sent.ok, false, 'a message that could not be written must not get a 250');
    assert.ok(!sent.ok);
    assert.equal(sent.code, 451, sent.response);
    assert.match(sent.response, /^451 4\.3\.0 /);
    assert.deepEqual(await filesIn(path.join(relay.spoolDir, 'tmp')), []);
    assert.deepEqual(await queuedIds(relay.spoolDir), []);
    assert.deepEqual(await filesIn(path.join(relay.spoolDir, 'queue')), []);

    // The same connection-level client right after: a small message still goes through.
    const small = await sendMail({ port: relay.port, from: 'scanner@corp.example', to: ['a@example.com'] });
    assert.ok(small.ok, small.response);
  });
});

/** Mounts a tiny tmpfs on `dir` (root with CAP_SYS_ADMIN only); the reason why not otherwise. */
function mountTinyTmpfs(dir: string, size: string): string | undefined {
  if (process.platform !== 'linux') return 'tmpfs needs Linux';
  if (process.getuid?.() !== 0) return 'mounting a tmpfs needs root';
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size},mode=0750`, 'smarthost-test', dir], {
      stdio: 'pipe',
    });
    return undefined;
  } catch (err) {
    return `cannot mount a tmpfs here: ${(err as Error).message.split('\n')[0]}`;
  }
}

describe('relay: disk full', () => {
  let relay: Relay | undefined;
  let spoolDir: string;
  let whyNot: string | undefined;
  const unmount = () => {
    try {
      execFileSync('umount', [spoolDir], { stdio: 'pipe' });
    } catch {
      // not mounted
    }
  };

  before(async () => {
    spoolDir = path.join(await makeTempDir('smarthost-full'), 'spool');
    await fs.mkdir(spoolDir);
    whyNot = mountTinyTmpfs(spoolDir, '512k');
    if (whyNot) return;
    process.once('exit', unmount);
    relay = await startRelay({ config: { spool: { dir: spoolDir } } });
  });

  after(async () => {
    await relay?.stop();
    if (!whyNot) unmount();
  });

  test('a full disk answers 452 4.3.1, leaves no partial file, and the relay recovers', async (t) => {
    if (whyNot || !relay) {
      t.skip(whyNot);
      return;
    }
    const sent = await sendMail({
      port: relay.port,
      from: 'scanner@corp.example',
      to: ['a@example.com'],
      raw: sizedMessage('disk-full', 2048 * KB),
    });
    assert.equal(sent.ok, false, 'a message that could not be written must not get a 250');
    assert.ok(!sent.ok);
    assert.equal(sent.code, 452, sent.response);
    assert.match(sent.response, /^452 4\.3\.1 /);
    assert.deepEqual(await filesIn(path.join(spoolDir, 'tmp')), []);
    assert.deepEqual(await filesIn(path.join(spoolDir, 'queue')), []);
    await relay.waitForOutput(/"event":"spool_error"/);

    // The space was given back: a small message is accepted and captured.
    const small = await sendMail({ port: relay.port, from: 'scanner@corp.example', to: ['a@example.com'] });
    assert.ok(small.ok, small.response);
    await waitUntil('the small message in the outbox', async () =>
      (await filesIn(path.join(spoolDir, 'outbox'))).includes(`${small.queueId}.json`),
    );
  });
});
