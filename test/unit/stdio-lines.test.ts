// The reader of `sendmail -bs` (src/cli/stdio-lines.ts), fed hostile input: the same bytes cut
// into chunks at every place must read the same, a "." line split over chunks still ends the
// message, a dot-stuffed line is unstuffed once, a bare CR is no line end, long lines are
// bounded, and the input ending inside a message is an error, not a message.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { InputEnded, MAX_COMMAND, StdioLines } from '../../src/cli/stdio-lines.js';

async function* chunks(data: Buffer, cuts: number[]): AsyncGenerator<Buffer> {
  let at = 0;
  for (const cut of [...cuts, data.length]) {
    if (cut > at) yield data.subarray(at, cut);
    at = Math.max(at, cut);
  }
}

/** Reads commands; at DATA, the message (joined) as `DATA:<text>`. */
async function readAll(input: AsyncIterable<Buffer>): Promise<string[]> {
  const lines = new StdioLines(input);
  const seen: string[] = [];
  for (;;) {
    const line = await lines.command();
    if (line === undefined) return seen;
    seen.push(line);
    if (line === 'DATA') {
      const parts: Buffer[] = [];
      for await (const piece of lines.message()) parts.push(piece);
      seen.push(`DATA:${Buffer.concat(parts).toString('latin1')}`);
    }
  }
}

const conversation = Buffer.from(
  'EHLO x\r\nMAIL FROM:<a@b>\r\nDATA\r\nSubject: s\r\n\r\n..one\r\n.\rnot an end\r\nbare\rCR\r\n\r\n.\r\nQUIT\r\n',
  'latin1',
);
const expected = [
  'EHLO x',
  'MAIL FROM:<a@b>',
  'DATA',
  'DATA:Subject: s\r\n\r\n.one\r\n\rnot an end\r\nbare\rCR\r\n\r\n',
  'QUIT',
];

describe('sendmail -bs reader', () => {
  test('the same bytes read the same, cut anywhere (every one and two cuts)', async () => {
    assert.deepEqual(await readAll(chunks(conversation, [])), expected);
    for (let i = 1; i < conversation.length; i++) {
      assert.deepEqual(await readAll(chunks(conversation, [i])), expected, `cut at ${i}`);
      for (let j = i + 1; j < conversation.length; j += 7)
        assert.deepEqual(await readAll(chunks(conversation, [i, j])), expected, `cuts at ${i}, ${j}`);
    }
  });

  test('bare LF line ends, as local programs write them', async () => {
    const input = Buffer.from('HELO x\nDATA\nhi\n..x\n.\nQUIT\n');
    assert.deepEqual(await readAll(chunks(input, [])), ['HELO x', 'DATA', 'DATA:hi\n.x\n', 'QUIT']);
  });

  test('a command line past the limit is skipped whole and said to be too long', async () => {
    const long = Buffer.from(`EHLO ${'x'.repeat(MAX_COMMAND * 3)}\r\nNOOP\r\n`);
    assert.deepEqual(await readAll(chunks(long, [100, 3000, 5000])), ['too long', 'NOOP']);
  });

  test('a 1 MB line without an end streams in bounded pieces', async () => {
    const body = 'z'.repeat(1024 * 1024);
    const lines = new StdioLines(chunks(Buffer.from(`DATA\r\n${body}\r\n.\r\n`), [50_000, 700_000]));
    assert.equal(await lines.command(), 'DATA');
    let total = 0;
    for await (const piece of lines.message()) {
      assert.ok(piece.length <= 128 * 1024, `a piece of ${piece.length} bytes`);
      total += piece.length;
    }
    assert.equal(total, body.length + 2);
  });

  test('the input ends inside a message: InputEnded, also from drain()', async () => {
    const lines = new StdioLines(chunks(Buffer.from('DATA\r\nhalf a mess'), []));
    await lines.command();
    const message = lines.message();
    await assert.rejects(async () => {
      for await (const _ of message);
    }, InputEnded);
    const again = new StdioLines(chunks(Buffer.from('DATA\r\nhalf'), []));
    await again.command();
    await assert.rejects(again.message().drain(), InputEnded);
  });

  test('a consumer that stops early leaves the rest for drain(), then the next command', async () => {
    const lines = new StdioLines(
      chunks(Buffer.from(`DATA\r\n${'line\r\n'.repeat(50_000)}.\r\nQUIT\r\n`), [10]),
    );
    await lines.command();
    const message = lines.message();
    for await (const _ of message) break;
    await message.drain();
    assert.equal(await lines.command(), 'QUIT');
  });
});
