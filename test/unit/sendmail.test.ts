// sendmail's command line and message reading (src/cli/sendmail-args.ts, sendmail-message.ts).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { EX, parseSendmailArgs, SendmailError } from '../../src/cli/sendmail-args.js';
import { headerRecipients, outgoingHeader, readMessage, untilDot } from '../../src/cli/sendmail-message.js';
import { parseHeaderLine, headerLine, sizeField, MAGIC } from '../../src/maildrop/format.js';

async function* chunks(...parts: string[]): AsyncGenerator<Buffer> {
  for (const part of parts) yield Buffer.from(part);
}

async function text(input: AsyncIterable<Buffer>): Promise<string> {
  const out: Buffer[] = [];
  for await (const c of input) out.push(c);
  return Buffer.concat(out).toString();
}

test('flags as scripts write them: clustered, attached or separate values, -o options', () => {
  const a = parseSendmailArgs([
    '-ti',
    '-fcron@corp.example',
    '-F',
    'Cron Daemon',
    '-oem',
    '-odi',
    'x@y.example',
  ]);
  assert.equal(a.extract, true);
  assert.equal(a.ignoreDots, true);
  assert.equal(a.from, 'cron@corp.example');
  assert.equal(a.fullName, 'Cron Daemon');
  assert.deepEqual(a.recipients, ['x@y.example']);
  assert.deepEqual(a.ignored, ['-oem', '-odi']);
  const b = parseSendmailArgs(['-oi', '-r', '<>', '-C', '/etc/x.yml', '-v', '--', '-odd@y.example']);
  assert.equal(b.ignoreDots, true);
  assert.equal(b.from, '');
  assert.equal(b.config, '/etc/x.yml');
  assert.equal(b.verbose, true);
  assert.deepEqual(b.recipients, ['-odd@y.example']);
  assert.equal(parseSendmailArgs(['-bs']).mode, 's');
  assert.throws(
    () => parseSendmailArgs(['-q']),
    (e: unknown) => e instanceof SendmailError && e.exitCode === EX.USAGE,
  );
  assert.throws(
    () => parseSendmailArgs(['-f']),
    (e: unknown) => e instanceof SendmailError && /-f needs a value/.test(e.message),
  );
});

test('without -i a lone dot ends the input, across chunk boundaries; with -i it does not', async () => {
  assert.equal(await text(untilDot(chunks('a\nb\n', '.', '\nc\n'), false)), 'a\nb\n');
  assert.equal(await text(untilDot(chunks('a\r\n.\r\nc'), false)), 'a\r\n');
  assert.equal(await text(untilDot(chunks('.\n'), false)), '');
  assert.equal(await text(untilDot(chunks('a\n..\nb\n.x\n'), false)), 'a\n..\nb\n.x\n');
  assert.equal(await text(untilDot(chunks('a\n.\nb\n'), true)), 'a\n.\nb\n');
});

test('-t: To, Cc and Bcc (folded, named, groups); Bcc removed; From written when missing', async () => {
  const message = await readMessage(
    chunks(
      'To: "Ops, Team" <ops@corp.example>,\n  dev@corp.example\n',
      'Cc: Team: a@x.example, b@x.example;\nBcc: secret@x.example\nSubject: s\n\nbody\n',
    ),
  );
  assert.deepEqual(headerRecipients(message.fields), [
    'ops@corp.example',
    'dev@corp.example',
    'a@x.example',
    'b@x.example',
    'secret@x.example',
  ]);
  const head = outgoingHeader(message.fields, 'cron@corp.example', 'Cron "Daemon"\nBcc: x@evil').toString();
  assert.doesNotMatch(head, /^Bcc:/im);
  assert.match(head, /^From: "Cron \\"Daemon\\" Bcc: x@evil" <cron@corp\.example>\n/);
  assert.equal(await text(message.body), '\nbody\n');
});

test('a body without a header section gets its blank line; a From is kept as it is', async () => {
  const message = await readMessage(chunks('just text\nmore\n'));
  assert.deepEqual(message.fields, []);
  assert.equal(await text(message.body), '\njust text\nmore\n');
  const withFrom = await readMessage(chunks('From: me@corp.example\n\nx'));
  assert.equal(outgoingHeader(withFrom.fields, 'other@corp.example').toString(), 'From: me@corp.example\n');
  assert.equal((await readMessage(chunks())).empty, true);
});

test('the maildrop header line round-trips, and malformed ones are refused', () => {
  const line = headerLine({ from: 'a@b.example', recipients: ['c@d.example'] });
  sizeField(42).copy(line, MAGIC.length);
  const parsed = parseHeaderLine(line.toString().trimEnd());
  assert.equal(parsed.size, 42);
  assert.deepEqual(parsed.envelope.recipients, ['c@d.example']);
  for (const bad of [
    'garbage',
    `${MAGIC}12 {}`,
    `${MAGIC}000000000001 not json`,
    `${MAGIC}000000000001 {"from":"a@b","recipients":[]}`,
    `${MAGIC}000000000001 {"from":"a@b","recipients":["x"],"extra":1}`,
  ]) {
    assert.throws(() => parseHeaderLine(bad), bad);
  }
});
