// LineEndingNormaliser: bare LF becomes CRLF, everything else passes unchanged, wherever the
// chunk boundaries fall.
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

/** The reference: every LF not preceded by CR gets one. */
const reference = (text: string) => text.replace(/(?<!\r)\n/g, '\r\n');

describe('LineEndingNormaliser', () => {
  test('turns bare LF into CRLF and leaves CRLF alone', async () => {
    assert.equal(await normalise(['a\nb\r\nc\n']), 'a\r\nb\r\nc\r\n');
    assert.equal(await normalise(['\n\n']), '\r\n\r\n');
    assert.equal(await normalise(['\r\n\r\n']), '\r\n\r\n');
  });

  test('leaves a lone CR and text without line ends as they are', async () => {
    assert.equal(await normalise(['a\rb\r']), 'a\rb\r');
    assert.equal(await normalise(['no line end']), 'no line end');
    assert.equal(await normalise(['']), '');
  });

  test('CR at the end of one chunk and LF at the start of the next stay one CRLF', async () => {
    assert.equal(await normalise(['a\r', '\nb']), 'a\r\nb');
    assert.equal(await normalise(['a', '\nb']), 'a\r\nb');
    assert.equal(await normalise(['\n', '\n', '\r', '\n']), '\r\n\r\n\r\n');
  });

  test('8-bit bytes pass untouched', async () => {
    const bytes = Buffer.from([0xff, 0x0a, 0x80, 0x0d, 0x0a, 0x00, 0x0a]);
    const out: Buffer[] = [];
    for await (const c of Readable.from([bytes]).pipe(new LineEndingNormaliser())) out.push(c as Buffer);
    assert.deepEqual([...Buffer.concat(out)], [0xff, 0x0d, 0x0a, 0x80, 0x0d, 0x0a, 0x00, 0x0d, 0x0a]);
  });

  test('matches the reference for random text split at random places', async () => {
    let seed = 42;
    const random = (n: number) => {
      seed = (seed * 1103515245 + 12345) & 0x7fffffff;
      return seed % n;
    };
    const alphabet = ['a', 'b', '\r', '\n', '\r\n', '.', ' '];
    for (let round = 0; round < 200; round++) {
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
