// HeaderRewriter: the header block is collected and edited, a trace line put on top, and the
// body streams through untouched, wherever the chunk boundaries fall.
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import type { Headers } from 'mailsplit';
import { HeaderRewriter, type HeaderRewriterOptions } from '../../src/rewrite/header-rewriter.js';

async function rewrite(chunks: string[], options: HeaderRewriterOptions): Promise<string> {
  const out: Buffer[] = [];
  const stream = Readable.from(chunks.map((c) => Buffer.from(c, 'latin1'))).pipe(new HeaderRewriter(options));
  for await (const chunk of stream) out.push(chunk as Buffer);
  return Buffer.concat(out).toString('latin1');
}

const TRACE = 'Received: from test\r\n\tby relay';
const keep: HeaderRewriterOptions = { edit: () => undefined, prepend: [TRACE] };
const addDate: HeaderRewriterOptions = {
  edit: (headers: Headers) => {
    if (!headers.hasHeader('date')) headers.add('Date', 'Mon, 01 Jan 2024 00:00:00 +0000', Infinity);
  },
  prepend: [TRACE],
};

const MESSAGE =
  'From: a@corp.example\r\nSubject: folded\r\n  continued\r\nX-Spaces:   odd  \r\n\r\nBody\r\n\r\nReceived: not a header\r\n';

describe('HeaderRewriter', () => {
  test('with no edit, the output is the trace line and the message byte for byte', async () => {
    assert.equal(await rewrite([MESSAGE], keep), `${TRACE}\r\n${MESSAGE}`);
  });

  test('the result does not depend on where the chunks are split', async () => {
    const expected = await rewrite([MESSAGE], addDate);
    assert.match(expected, /^Received: from test\r\n\tby relay\r\nFrom: a@corp\.example\r\n/);
    assert.match(expected, /X-Spaces: {3}odd {2}\r\nDate: Mon, 01 Jan 2024 00:00:00 \+0000\r\n\r\nBody\r\n/);
    for (let i = 1; i < MESSAGE.length; i++) {
      assert.equal(
        await rewrite([MESSAGE.slice(0, i), MESSAGE.slice(i)], addDate),
        expected,
        `split at ${i}`,
      );
    }
    assert.equal(await rewrite(MESSAGE.split(''), addDate), expected, 'one byte at a time');
  });

  test('edits change the headers only; the body stays exactly as it was', async () => {
    const out = await rewrite([MESSAGE], {
      edit: (headers) => {
        headers.remove('x-spaces');
        headers.update('Subject', 'changed');
      },
    });
    assert.equal(
      out,
      'From: a@corp.example\r\nSubject: changed\r\n\r\nBody\r\n\r\nReceived: not a header\r\n',
    );
  });

  test('a message of headers only gets its headers edited and a blank line', async () => {
    assert.equal(
      await rewrite(['Subject: only headers\r\n'], addDate),
      `${TRACE}\r\nSubject: only headers\r\nDate: Mon, 01 Jan 2024 00:00:00 +0000\r\n\r\n`,
    );
    // Unedited, it is left as it came.
    assert.equal(await rewrite(['Subject: only headers\r\n'], keep), `${TRACE}\r\nSubject: only headers\r\n`);
  });

  test('a message that starts with the blank line (no headers): added ones go before it', async () => {
    assert.equal(
      await rewrite(['\r\nJust a body\r\n'], addDate),
      `${TRACE}\r\nDate: Mon, 01 Jan 2024 00:00:00 +0000\r\n\r\nJust a body\r\n`,
    );
  });

  test('an empty message still gets the trace line', async () => {
    const out = await rewrite([], addDate);
    assert.ok(out.startsWith(`${TRACE}\r\n`), JSON.stringify(out));
  });

  test('beyond maxHeaderBytes without a blank line, nothing is parsed: trace line, then as is', async () => {
    const huge = `X-Long: ${'a'.repeat(5000)}\r\n`.repeat(3);
    const edits: string[] = [];
    const out = await rewrite([huge, huge, '\r\nbody\r\n'], {
      edit: () => edits.push('called'),
      prepend: [TRACE],
      maxHeaderBytes: 8000,
    });
    assert.equal(out, `${TRACE}\r\n${huge}${huge}\r\nbody\r\n`);
    assert.deepEqual(edits, []);
  });

  test('a long header block arriving in many small chunks is found and edited whole', async () => {
    const headers = Array.from({ length: 2000 }, (_, i) => `X-Trace-${i}: ${'h'.repeat(90)}\r\n`).join('');
    const message = `${headers}\r\nthe body\r\n`;
    const chunks: string[] = [];
    for (let i = 0; i < message.length; i += 997) chunks.push(message.slice(i, i + 997));
    const out = await rewrite(chunks, addDate);
    assert.equal(out, `${TRACE}\r\n${headers}Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n\r\nthe body\r\n`);
  });

  test('a large body flows through in pieces, not gathered', async () => {
    const body = `${'b'.repeat(998)}\r\n`.repeat(2000);
    const stream = Readable.from(
      (function* () {
        yield Buffer.from('Subject: big\r\n\r\n');
        for (let i = 0; i < body.length; i += 16384) yield Buffer.from(body.slice(i, i + 16384));
      })(),
    ).pipe(new HeaderRewriter(keep));
    let largest = 0;
    let total = 0;
    for await (const chunk of stream) {
      largest = Math.max(largest, (chunk as Buffer).length);
      total += (chunk as Buffer).length;
    }
    assert.equal(total, TRACE.length + 2 + 'Subject: big\r\n\r\n'.length + body.length);
    assert.ok(largest < 128 * 1024, `a chunk of ${largest} bytes: the body was gathered`);
  });
});
