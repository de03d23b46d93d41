// LineEndingNormaliser: only CRLF leaves. Bare LF and bare CR each become CRLF, CRLF stays one
// line end, wherever the chunk boundaries fall (every split point of the smuggling look-alikes
// is tried), and a chunk full of one kind of line byte is handled in one pass.
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, test } from 'node:test';
import { LineEndingNormaliser } from '../../src/rewrite/line-endings.js';

async function normalise(chunks: (string | Buffer)[]): Promise<string> {
  const out: Buffer[] = [];
  const stream = Readable.from(chunks.map((c) => (Buffer.isBuffer(c) ? c : Buffer.from(c, 'latin1')))).pipe(
    new LineEndingNormaliser(),
  );
  for await (const chunk of stream) out.push(chunk as Buffer);
  return Buffer.concat(out).toString('latin1');
}

/** The reference: CRLF, CR and LF each are one line end, written as CRLF. */
const reference = (text: string) => text.replace(/\r\n|\r|\n/g, '\r\n');

/** Every way of cutting `text` into two and three chunks (and one byte at a time). */
function splits(text: string): string[][] {
  const out: string[][] = [[text], [...text]];
  for (let i = 0; i <= text.length; i++) {
    out.push([text.slice(0, i), text.slice(i)]);
    for (let j = i; j <= text.length; j++) out.push([text.slice(0, i), text.slice(i, j), text.slice(j)]);
  }
  return out;
}

/** The end-of-data look-alikes of the 2023 SMTP smuggling research. */
const LOOKALIKES = ['\r.\r\n', '\r.\n', '\r.\r', '\n.\n', '\n.\r\n', '\r\n.\n', '\n.\r'];

describe('LineEndingNormaliser', () => {
  test('turns bare LF and bare CR into CRLF and leaves CRLF alone', async () => {
    assert.equal(await normalise(['a\nb\r\nc\n']), 'a\r\nb\r\nc\r\n');
    assert.equal(await normalise(['\n\n']), '\r\n\r\n');
    assert.equal(await normalise(['\r\n\r\n']), '\r\n\r\n');
    assert.equal(await normalise(['a\rb\r']), 'a\r\nb\r\n');
    assert.equal(await normalise(['\r\r\n\n\r']), '\r\n\r\n\r\n\r\n');
    assert.equal(await normalise(['\n\r']), '\r\n\r\n');
  });

  test('text without line ends passes as it is', async () => {
    assert.equal(await normalise(['no line end']), 'no line end');
    assert.equal(await normalise(['']), '');
  });

  test('CR at the end of one chunk and LF at the start of the next stay one CRLF', async () => {
    assert.equal(await normalise(['a\r', '\nb']), 'a\r\nb');
    assert.equal(await normalise(['a', '\nb']), 'a\r\nb');
    assert.equal(await normalise(['\n', '\n', '\r', '\n']), '\r\n\r\n\r\n');
    assert.equal(await normalise(['a\r', 'b']), 'a\r\nb');
    assert.equal(await normalise(['a\r', '', '\nb']), 'a\r\nb');
    assert.equal(await normalise(['a\r']), 'a\r\n');
    assert.equal(await normalise(['a\r', '\r', '\n']), 'a\r\n\r\n');
  });

  test('every smuggling look-alike, at every split point, becomes a CRLF "." CRLF line', async () => {
    for (const look of LOOKALIKES) {
      const text = `body${look}MAIL FROM:<ceo@corp.example>\r\n`;
      const expected = reference(text);
      assert.match(expected, /^body\r\n\.\r\n(\r\n)?MAIL FROM/);
      for (const chunks of splits(text)) {
        const out = await normalise(chunks);
        assert.equal(out, expected, JSON.stringify(chunks));
        assert.doesNotMatch(out, /\r(?!\n)|(?<!\r)\n/, JSON.stringify(chunks));
      }
    }
  });

  test('8-bit bytes and NUL pass untouched', async () => {
    const bytes = Buffer.from([0xff, 0x0a, 0x80, 0x0d, 0x0a, 0x00, 0x0a, 0x0d, 0x41]);
    const out: Buffer[] = [];
    for await (const c of Readable.from([bytes]).pipe(new LineEndingNormaliser())) out.push(c as Buffer);
    assert.deepEqual(
      [...Buffer.concat(out)],
      [0xff, 0x0d, 0x0a, 0x80, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x0d, 0x0a, 0x41],
    );
  });

  test('a large chunk of only CRs (or only LFs) is normalised whole', async () => {
    const n = 200_000;
    assert.equal(await normalise(['\r'.repeat(n)]), '\r\n'.repeat(n));
    assert.equal(await normalise(['\n'.repeat(n)]), '\r\n'.repeat(n));
  });

  test('counts the bare line ends it fixed', async () => {
    const normaliser = new LineEndingNormaliser();
    const out: Buffer[] = [];
    for await (const c of Readable.from([Buffer.from('a\r'), Buffer.from('b\nc\r\n\r')]).pipe(normaliser))
      out.push(c as Buffer);
    assert.equal(normaliser.bareLineEnds, 3);
  });

  test('matches the reference for random text split at random places', async () => {
    let seed = 42;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const alphabet = ['a', 'b', '\r', '\n', '\r\n', '.', ' '];
    for (let round = 0; round < 300; round++) {
      let text = '';
      for (let i = random(60); i > 0; i--) text += alphabet[random(alphabet.length)];
      const chunks: string[] = [];
      for (let at = 0; at < text.length;) {
        const len = 1 + random(5);
        chunks.push(text.slice(at, at + len));
        at += len;
      }
      assert.equal(await normalise(chunks), reference(text), JSON.stringify(chunks));
    }
  });
});
