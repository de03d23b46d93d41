// `sendmail -bs` (SMTP on standard input and output, how Symfony Mailer and Laravel call
// sendmail by default), the real CLI through a symlink named `sendmail`, talking to a real
// relay that delivers to the recording ESP: a client that waits for each reply, two messages
// in one conversation, dot-stuffing undone, the local source's policy at RCPT, a relay that is
// not running (the message is kept and sent when it starts), and hostile conversations.
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcessWithoutNullStreams } from 'node:child_process';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Esp } from '../helpers/esp.js';
import type { Relay } from '../helpers/relay.js';
import { filesIn, header, splitMessage, waitUntil } from './relay-common.js';
import { runSendmail, startSendmailRelay } from './sendmail-common.js';

/**
 * Python's smtplib, a real client, over a socket pair on the command's stdin and stdout (as a
 * PHP mailer's pipe): it stuffs dots, sends 8-bit UTF-8, and reads the replies itself.
 */
const SMTPLIB_CLIENT = String.raw`
import os, smtplib, socket, subprocess, sys
ours, theirs = socket.socketpair()
child = subprocess.Popen([sys.argv[1], sys.argv[2], '-bs'], stdin=theirs, stdout=theirs)
theirs.close()
client = smtplib.SMTP()
client.sock, client.file = ours, None
client.getreply()
client.ehlo('app.corp.example')
text = 'Subject: smtplib-bs\r\n\r\n.first line\r\nGr\u00fc\u00dfe\r\n'
print(client.sendmail('app@corp.example', ['ops@corp.example'], text.encode('utf-8')))
client.quit()
sys.exit(child.wait())
`;
const python = spawnSync('python3', ['-c', 'import smtplib'], { stdio: 'ignore' }).status === 0;

/** Every conversation started, so that a failed test leaves no process behind. */
const started: ChildProcessWithoutNullStreams[] = [];

/** `sendmail -bs` as a client that waits for each reply, as Symfony's SMTP transport does. */
class Conversation {
  private buffer = '';
  private lines: string[] = [];
  private readonly replies: string[] = [];
  private waiting?: (reply: string) => void;
  readonly exited: Promise<number | null>;
  private readonly child: ChildProcessWithoutNullStreams;

  constructor(link: string, config: string) {
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SMARTHOST_')));
    this.child = spawn(process.execPath, [link, '-bs'], { env: { ...env, SMARTHOST_CONFIG: config } });
    started.push(this.child);
    this.child.stdout.setEncoding('utf8');
    this.child.stdout.on('data', (chunk: string) => this.take(chunk));
    this.exited = new Promise((resolve) => this.child.once('close', resolve));
  }

  private take(chunk: string): void {
    this.buffer += chunk;
    for (let nl = this.buffer.indexOf('\r\n'); nl >= 0; nl = this.buffer.indexOf('\r\n')) {
      const line = this.buffer.slice(0, nl);
      this.buffer = this.buffer.slice(nl + 2);
      this.lines.push(line);
      if (/^\d{3}(?: |$)/.test(line)) {
        const reply = this.lines.join('\n');
        this.lines = [];
        if (this.waiting) {
          const waiting = this.waiting;
          this.waiting = undefined;
          waiting(reply);
        } else this.replies.push(reply);
      }
    }
  }

  reply(): Promise<string> {
    const ready = this.replies.shift();
    if (ready !== undefined) return Promise.resolve(ready);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no reply within 20 s')), 20_000);
      this.waiting = (reply) => {
        clearTimeout(timer);
        resolve(reply);
      };
    });
  }

  send(line: string): Promise<string> {
    this.child.stdin.write(`${line}\r\n`);
    return this.reply();
  }
}

/** One message over `c`: MAIL, RCPT, DATA, the text (dot-stuffed here), "."; the last reply. */
async function sendOne(c: Conversation, from: string, to: string[], text: string): Promise<string> {
  assert.match(await c.send(`MAIL FROM:<${from}>`), /^250 /);
  for (const rcpt of to) assert.match(await c.send(`RCPT TO:<${rcpt}>`), /^250 /);
  assert.match(await c.send('DATA'), /^354 /);
  const stuffed = text.replace(/^\./gm, '..').replace(/\r?\n/g, '\r\n');
  return c.send(`${stuffed}\r\n.`);
}

describe('sendmail -bs: SMTP on standard input', () => {
  let esp: Esp;
  let relay: Relay;
  let link: string;

  before(async () => {
    ({ esp, relay, link } = await startSendmailRelay());
  });

  after(async () => {
    for (const child of started) child.kill('SIGKILL');
    await relay?.stop();
    await esp?.close();
  });

  test('two messages in one conversation, each queued before its 250, dots unstuffed', async () => {
    const c = new Conversation(link, relay.configFile);
    assert.match(await c.reply(), /^220 .*ESMTP/);
    const ehlo = await c.send('EHLO app.corp.example');
    assert.match(ehlo, /^250-/);
    assert.match(ehlo, /^250 ENHANCEDSTATUSCODES$/m);
    const first = await sendOne(
      c,
      'app@corp.example',
      ['alice@example.com', 'bob@example.com'],
      'From: App <app@corp.example>\nSubject: bs-one\n\nline one\n.a line that began with a dot\n..two dots\n',
    );
    assert.match(first, /^250 2\.0\.0 Ok: queued as [0-9A-Z]+$/);
    const second = await sendOne(c, 'app@corp.example', ['ops@corp.example'], 'Subject: bs-two\n\nsecond\n');
    assert.match(second, /^250 2\.0\.0 Ok: queued as /);
    assert.match(await c.send('QUIT'), /^221 /);
    assert.equal(await c.exited, 0);

    await esp.waitFor(2);
    const one = esp.messages.find((m) => header(m.raw, 'subject') === 'bs-one')!;
    assert.equal(one.from, 'app@corp.example');
    assert.deepEqual([...one.to].sort(), ['alice@example.com', 'bob@example.com']);
    const body = splitMessage(one.raw).body;
    assert.match(body, /^\.a line that began with a dot\r$/m);
    assert.match(body, /^\.\.two dots\r$/m);
    assert.match(header(one.raw, 'received') ?? '', /from userid \d+/, 'submitted as the local source');
    const two = esp.messages.find((m) => header(m.raw, 'subject') === 'bs-two')!;
    assert.deepEqual(two.to, ['ops@corp.example']);
    assert.equal(header(two.raw, 'from'), 'app@corp.example', 'a From written from MAIL FROM');
  });

  test("the local source's policy answers RCPT; the conversation goes on", async () => {
    esp.reset();
    const c = new Conversation(link, relay.configFile);
    await c.reply();
    await c.send('HELO app');
    assert.match(await c.send('MAIL FROM:<app@corp.example>'), /^250 /);
    const refused = await c.send('RCPT TO:<x@elsewhere.example>');
    assert.match(refused, /^5\d\d 5\.\d\.\d .*elsewhere\.example/);
    assert.match(await c.send('DATA'), /^503 5\.5\.1/);
    assert.match(await c.send('RSET'), /^250 /);
    const sent = await sendOne(c, 'app@corp.example', ['ops@corp.example'], 'Subject: after-refusal\n\nok\n');
    assert.match(sent, /^250 /);
    await c.send('QUIT');
    await esp.waitFor(1);
    assert.deepEqual(esp.messages[0]!.to, ['ops@corp.example']);
  });

  test('hostile: long lines, unknown and out-of-order commands, a header section past 1 MB', async () => {
    esp.reset();
    const c = new Conversation(link, relay.configFile);
    await c.reply();
    assert.match(await c.send(`EHLO ${'x'.repeat(100_000)}`), /^500 5\.5\.2 Line too long/);
    assert.match(await c.send('STARTTLS'), /^502 5\.5\.2/);
    assert.match(await c.send('RCPT TO:<a@example.com>'), /^503 5\.5\.1/);
    assert.match(await c.send('MAIL FROM:<app@corp.example> XFORWARD=1'), /^555 5\.5\.4/);
    assert.match(await c.send('MAIL FROM:app@corp.example>'), /^501 5\.5\.4/);
    assert.match(await c.send('MAIL FROM:<a!b@corp.example>'), /^553 5\.1\.7/);
    assert.match(await c.send('MAIL FROM:<app@corp.example>'), /^250 /);
    assert.match(await c.send('MAIL FROM:<app@corp.example>'), /^503 5\.5\.1/);
    assert.match(await c.send('RCPT TO:<ops@corp.example>'), /^250 /);
    assert.match(await c.send('DATA'), /^354 /);
    // A header section past 1 MB (20,000 short fields): refused once read, the rest of the
    // message read to its "." so the conversation stays in step.
    const fields = Array.from({ length: 20_000 }, (_, i) => `X-Pad-${i}: ${'y'.repeat(50)}`).join('\r\n');
    assert.match(await c.send(`${fields}\r\n\r\nbody\r\n.`), /^554 5\.6\.0 .*header section/);
    // A header line past 998 characters: the relay's own check refuses it at pickup.
    assert.match(await c.send('MAIL FROM:<app@corp.example>'), /^250 /);
    assert.match(await c.send('RCPT TO:<ops@corp.example>'), /^250 /);
    assert.match(await c.send('DATA'), /^354 /);
    assert.match(
      await c.send(`X-Long: ${'z'.repeat(5000)}\r\n\r\nbody\r\n.`),
      /^5\d\d 5\.6\.0 Header line too long/,
    );
    const sent = await sendOne(c, 'app@corp.example', ['ops@corp.example'], 'Subject: still-in-step\n\nok\n');
    assert.match(sent, /^250 /);
    await c.send('QUIT');
    await esp.waitFor(1);
    assert.equal(header(esp.messages[0]!.raw, 'subject'), 'still-in-step');
    assert.deepEqual(await filesIn(path.join(relay.spoolDir, 'maildrop')), [], 'nothing refused was kept');
  });

  test("Python's smtplib as the client", { skip: !python && 'python3 is not installed' }, async () => {
    esp.reset();
    const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('SMARTHOST_')));
    const run = spawnSync('python3', ['-c', SMTPLIB_CLIENT, process.execPath, link], {
      env: { ...env, SMARTHOST_CONFIG: relay.configFile },
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(run.status, 0, run.stderr);
    assert.equal(run.stdout.trim(), '{}', 'no recipient refused');
    await esp.waitFor(1);
    const body = splitMessage(esp.messages[0]!.raw).body;
    assert.match(body, /^\.first line\r$/m);
    assert.ok(esp.messages[0]!.raw.includes(Buffer.from('Grüße')), 'the UTF-8 text arrived as sent');
  });

  test('the input ends inside a message: nothing is sent, exit 66', async () => {
    esp.reset();
    const maildrop = path.join(relay.spoolDir, 'maildrop');
    const script =
      'HELO app\r\nMAIL FROM:<app@corp.example>\r\nRCPT TO:<ops@corp.example>\r\nDATA\r\nSubject: cut\r\n\r\nhalf';
    const run = await runSendmail(link, ['-bs'], script, { config: relay.configFile });
    assert.equal(run.code, 66, run.stderr);
    assert.match(run.stderr, /^sendmail: the input ended before the end of the message/);
    assert.match(run.stdout, /^354 /m);
    assert.deepEqual(await filesIn(maildrop), []);
    assert.equal(esp.messages.length, 0);
  });

  test('with the relay stopped: kept in maildrop with a 250, sent once it starts', async () => {
    esp.reset();
    await relay.stop();
    const script = [
      'EHLO app',
      'MAIL FROM:<app@corp.example>',
      'RCPT TO:<ops@corp.example>',
      'DATA',
      'Subject: while-stopped',
      '',
      'kept',
      '.',
      'QUIT',
      '',
    ].join('\r\n');
    // All at once (a client that pipelines): each reply still comes in order.
    const run = await runSendmail(link, ['-bs'], script, { config: relay.configFile });
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^250 2\.0\.0 Ok: kept for the relay \(the relay is not running/m);
    assert.match(run.stdout, /^221 /m);
    await relay.restart();
    await waitUntil('the kept message', () =>
      esp.messages.find((m) => header(m.raw, 'subject') === 'while-stopped'),
    );
  });
});
