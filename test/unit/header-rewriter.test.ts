// HeaderRewriter: the header block is collected and edited, a trace line put on top, and the
// body streams through untouched, wherever the chunk boundaries fall.
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import type { Headers } from 'mailsplit';
import { HeaderRewriter, type HeaderRewriterOptions } from '../../src/rewrite/header-rewriter.js';
import { HeaderSectionError } from '../../src/rewrite/header-section.js';

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
    // Unedited, it gets the blank line too; so does a last line without its line end.
    assert.equal(
      await rewrite(['Subject: only headers\r\n'], keep),
      `${TRACE}\r\nSubject: only headers\r\n\r\n`,
    );
    assert.equal(await rewrite(['Subject: no line end'], keep), `${TRACE}\r\nSubject: no line end\r\n\r\n`);
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

  test('past a limit the stream fails: never a message whose headers were not all read', async () => {
    const huge = `X-Long: ${'a'.repeat(900)}\r\n`.repeat(10);
    const edits: string[] = [];
    await assert.rejects(
      rewrite([huge, huge, '\r\nbody\r\n'], {
        edit: () => edits.push('called'),
        prepend: [TRACE],
        limits: { maxBytes: 8000 },
      }),
      (err: Error) => err instanceof HeaderSectionError && err.problem === 'bytes',
    );
    await assert.rejects(
      rewrite(['A: 1\r\nB: 2\r\nC: 3\r\n\r\n'], { ...keep, limits: { maxFields: 2 } }),
      (err: Error) => err instanceof HeaderSectionError && err.problem === 'fields',
    );
    // A header line over 998 characters, also one that never ends (bounded as it grows).
    await assert.rejects(
      rewrite([`X-Long: ${'a'.repeat(991)}\r\n\r\n`], keep),
      (err: Error) => err instanceof HeaderSectionError && err.problem === 'line',
    );
    await assert.rejects(
      rewrite(['X-Long: ', ...Array.from({ length: 100 }, () => 'a'.repeat(100))], keep),
      (err: Error) => err instanceof HeaderSectionError && err.problem === 'line',
    );
    assert.deepEqual(edits, []);
    // `refuse` chooses the error the stream fails with.
    await assert.rejects(
      rewrite(['A: 1\r\nB: 2\r\n\r\n'], {
        ...keep,
        limits: { maxFields: 1 },
        refuse: () => new Error('552'),
      }),
      /552/,
    );
  });

  test('exactly at the limits the headers are read and edited', async () => {
    const line = `X-Long: ${'a'.repeat(990)}\r\n`; // 998 characters and CRLF
    const out = await rewrite([line, '\r\nbody\r\n'], { ...addDate, limits: { maxFields: 2 } });
    assert.equal(out, `${TRACE}\r\n${line}Date: Mon, 01 Jan 2024 00:00:00 +0000\r\n\r\nbody\r\n`);
  });

  test('WSP before the colon: the same field, written without it', async () => {
    const seen: string[] = [];
    const out = await rewrite(['From : CEO <ceo@corp.example>\r\nSubject\t: x\r\n\r\nbody\r\n'], {
      edit: (headers) => seen.push(...headers.getList().map((h) => h.key)),
    });
    assert.deepEqual(seen, ['from', 'subject']);
    assert.equal(out, 'From: CEO <ceo@corp.example>\r\nSubject: x\r\n\r\nbody\r\n');
  });

  test('a line that is not a header ends the section, with a blank line put before it', async () => {
    const keys: string[][] = [];
    const opts: HeaderRewriterOptions = { edit: (h) => keys.push(h.getList().map((l) => l.key)) };
    assert.equal(
      await rewrite(['Subject: a\r\nnot a header\r\nFrom: CEO <ceo@corp.example>\r\n\r\nbody\r\n'], opts),
      'Subject: a\r\n\r\nnot a header\r\nFrom: CEO <ceo@corp.example>\r\n\r\nbody\r\n',
    );
    // 8-bit bytes or a space in a name; a continuation with nothing before it; an mbox line.
    for (const bad of [
      'Fr\xf6m: x',
      'Fr om: x',
      ' From: x',
      'From ceo@corp.example Mon Jan  1 00:00:00 2024',
    ]) {
      const out = await rewrite([`${bad}\r\nFrom: CEO <ceo@corp.example>\r\n\r\nbody\r\n`], opts);
      assert.equal(out, `\r\n${bad}\r\nFrom: CEO <ceo@corp.example>\r\n\r\nbody\r\n`, JSON.stringify(bad));
    }
    assert.deepEqual(keys, [['subject'], [], [], [], []]);
  });

  test('continuation lines of only whitespace are dropped; others stay folded', async () => {
    const out = await rewrite(['Subject: a\r\n \r\n\t\r\n b\r\nFrom: x@corp.example\r\n\r\nbody\r\n'], keep);
    assert.equal(out, `${TRACE}\r\nSubject: a\r\n b\r\nFrom: x@corp.example\r\n\r\nbody\r\n`);
  });

  test('NUL and 8-bit bytes in header values are kept as they are', async () => {
    const out = await rewrite(['Subject: a\x00b \xe9\r\n\r\nbody\r\n'], keep);
    assert.equal(out, `${TRACE}\r\nSubject: a\x00b \xe9\r\n\r\nbody\r\n`);
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
