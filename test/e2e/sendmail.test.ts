// Issue 16, acceptance 1 and 2: the real CLI run through a symlink named `sendmail`, with
// SMARTHOST_CONFIG set, submitting to a real relay process that delivers to the recording ESP.
//  1. `sendmail -t -i` delivers to the To (and Cc, Bcc) recipients, the Bcc line removed;
//  2. with the relay stopped, `sendmail -t -oi -f cron@corp.example` exits 0 and the message
//     arrives once the relay starts;
//  and bad input gets a non-zero sysexits code with one clear line on stderr.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import type { Esp } from '../helpers/esp.js';
import { makeTempDir, type Relay } from '../helpers/relay.js';
import { filesIn, header, splitMessage, waitUntil } from './relay-common.js';
import { runSendmail, startSendmailRelay } from './sendmail-common.js';

describe('sendmail: scripts submit through the relay', () => {
  let esp: Esp;
  let relay: Relay;
  let link: string;
  let maildrop: string;

  before(async () => {
    ({ esp, relay, link } = await startSendmailRelay());
    maildrop = path.join(relay.spoolDir, 'maildrop');
  });

  after(async () => {
    await relay?.stop();
    await esp?.close();
  });

  test('sendmail -t -i delivers to To, Cc and Bcc, and the Bcc line does not leave', async () => {
    const message = [
      'To: Alice <alice@example.com>',
      'Cc: bob@example.com',
      'Bcc: hidden@example.com',
      'Subject: nightly backup',
      '',
      'backup done',
      '.',
      'this line is still the message (-i)',
      '',
    ].join('\n');
    const run = await runSendmail(link, ['-t', '-i'], message, { config: relay.configFile });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stderr, '');
    await esp.waitFor(1);
    const got = esp.messages[0]!;
    assert.deepEqual([...got.to].sort(), ['alice@example.com', 'bob@example.com', 'hidden@example.com']);
    assert.equal(header(got.raw, 'bcc'), undefined);
    assert.doesNotMatch(splitMessage(got.raw).head, /hidden@/);
    assert.match(splitMessage(got.raw).body, /backup done/);
    assert.match(splitMessage(got.raw).body, /this line is still the message/);
    // Submitted locally, as the source `sendmail`: the trace line names the user id.
    assert.match(header(got.raw, 'received') ?? '', /smarthost, from userid \d+/);
    assert.equal(await filesIn(maildrop).then((f) => f.length), 0);
  });

  test('without -i, a line of a single dot ends the message; recipients as arguments', async () => {
    esp.reset();
    const run = await runSendmail(
      link,
      ['-f', 'app@corp.example', 'ops@corp.example'],
      'Subject: dots\n\nbefore\n.\nafter\n',
      { config: relay.configFile },
    );
    assert.equal(run.code, 0, run.stderr);
    await esp.waitFor(1);
    const got = esp.messages[0]!;
    assert.equal(got.from, 'app@corp.example');
    assert.deepEqual(got.to, ['ops@corp.example']);
    const body = splitMessage(got.raw).body;
    assert.match(body, /before/);
    assert.doesNotMatch(body, /after/);
    // No From in the message: one is written from the envelope sender.
    assert.equal(header(got.raw, 'from'), 'app@corp.example');
  });

  test('bad input: a non-zero sysexits code and one line on stderr', async () => {
    const config = relay.configFile;
    const cases: {
      args: string[];
      input: string;
      code: number;
      says: RegExp;
      env?: Record<string, string>;
    }[] = [
      { args: ['-t'], input: 'Subject: nobody\n\nhi\n', code: 64, says: /no recipients/ },
      { args: ['x@example.com'], input: '', code: 66, says: /no message on standard input/ },
      { args: ['-q', 'x@example.com'], input: 'hi\n', code: 64, says: /unknown option -q/ },
      { args: ['-f'], input: 'hi\n', code: 64, says: /-f needs a value/ },
      { args: ['a!b@example.com'], input: 'hi\n', code: 67, says: /bad recipient address/ },
      // The source `sendmail`'s policy (allowedRecipientDomains) refuses: EX_NOPERM.
      { args: ['x@elsewhere.example'], input: 'hi\n', code: 77, says: /elsewhere\.example/ },
      { args: ['-bt'], input: '', code: 64, says: /-bt is not supported/ },
    ];
    for (const c of cases) {
      const run = await runSendmail(link, c.args, c.input, { config });
      assert.equal(run.code, c.code, `${c.args.join(' ')}: ${run.stderr}`);
      assert.match(run.stderr, c.says);
      assert.equal(run.stderr.trimEnd().split('\n').length, 1, run.stderr);
      assert.match(run.stderr, /^sendmail: /);
    }
    // No config anywhere: EX_CONFIG, not a maildrop in the working directory.
    const cwd = await makeTempDir('smarthost-nocfg');
    const run = await runSendmail(link, ['x@example.com'], 'hi\n', { cwd });
    assert.ok(run.code === 78 || run.code === 0, run.stderr); // 0 only if /etc/smarthost exists here
    if (run.code === 78) assert.match(run.stderr, /no relay config found/);
    assert.deepEqual(await filesIn(path.join(cwd, 'data')), []);
    // Nothing refused was left for the relay.
    assert.deepEqual(await filesIn(maildrop), []);
  });

  test('relay stopped: sendmail -t -oi -f exits 0, and the message arrives when the relay starts', async () => {
    esp.reset();
    await relay.stop();
    const message = 'To: root@corp.example\nSubject: Cron <root@host> run-parts\n\nall good\n';
    const run = await runSendmail(link, ['-t', '-oi', '-f', 'cron@corp.example'], message, {
      config: relay.configFile,
    });
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stderr, '');
    const dropped = await filesIn(maildrop);
    assert.equal(dropped.length, 1, 'kept in maildrop/ while the relay is down');
    assert.equal(esp.messages.length, 0);
    await relay.restart();
    await esp.waitFor(1);
    const got = esp.messages[0]!;
    assert.equal(got.from, 'cron@corp.example');
    assert.deepEqual(got.to, ['root@corp.example']);
    assert.match(got.raw.toString(), /all good/);
    await waitUntil('the maildrop file removed', async () => (await filesIn(maildrop)).length === 0);
  });
});
