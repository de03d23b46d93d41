// A pinned sender through the real relay (issue 13, point 2 and its acceptance): a source with
// `sender:` set sends header sections built to get past the rewriting: a 1.1 MB header block,
// 11,000 headers, `From :` with a space before the colon, two From headers. Each is refused
// (552 5.3.4) or leaves with exactly one From, the pinned address.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sendMail, type SendMailResult } from '../helpers/client.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { header, splitMessage, upstreamFor, waitUntil } from './relay-common.js';

const PINNED = 'scanner@corp.example';
const CEO = 'From: CEO <ceo@corp.example>';

/** Every From field of a raw message's header section, however its name is spaced. */
function fromFields(raw: Buffer | string): string[] {
  const { head } = splitMessage(raw);
  return head.split('\r\n').filter((line) => /^from[ \t]*:/i.test(line));
}

describe('policy: a pinned sender holds for every header section', () => {
  let esp: Esp;
  let relay: Relay;

  before(async () => {
    esp = await startEsp();
    relay = await startRelay({
      config: {
        upstream: upstreamFor(esp),
        limits: { maxMessageSize: '20MB' },
        allowlist: [{ cidr: '127.0.0.1/32', name: 'floor3-printers', sender: PINNED }],
      },
    });
  });

  after(async () => {
    await relay?.stop();
    await esp?.close();
  });

  /** Refused with 552 5.3.4, or delivered with one From: the pinned address. */
  async function refusedOrPinned(subject: string, result: SendMailResult): Promise<void> {
    if (!result.ok) {
      assert.equal(result.code, 552, result.response);
      assert.match(result.response, /5\.3\.4 Header section too large/);
      return;
    }
    const got = await waitUntil(`"${subject}" at the ESP`, () =>
      esp.messages.find((m) => header(m.raw, 'subject') === subject),
    );
    const froms = fromFields(got.raw);
    assert.equal(froms.length, 1, froms.join('\n'));
    assert.match(froms[0]!, new RegExp(`<${PINNED.replace('.', '\\.')}>`));
    assert.equal(got.from, PINNED);
  }

  function send(subject: string, headers: string[]): Promise<SendMailResult> {
    const raw = `${[...headers, `Subject: ${subject}`, 'To: a@corp.example'].join('\r\n')}\r\n\r\nscan\r\n`;
    return sendMail({
      port: relay.port,
      from: 'x@printer.local',
      to: ['a@corp.example'],
      raw,
      timeoutMs: 60_000,
    });
  }

  test('a 1.1 MB header block before From', async () => {
    const pad = `X-Pad: ${Array.from({ length: 1100 }, () => 'p'.repeat(990)).join('\r\n ')}`;
    const result = await send('pinned-1.1MB', [pad, CEO]);
    await refusedOrPinned('pinned-1.1MB', result);
  });

  test('11,000 headers before From', async () => {
    const many = Array.from({ length: 11_000 }, (_, i) => `X-N${i}: ${i}`);
    const result = await send('pinned-11000', [...many, CEO]);
    await refusedOrPinned('pinned-11000', result);
  });

  test('"From :" with a space before the colon', async () => {
    const result = await send('pinned-space', ['From : CEO <ceo@corp.example>']);
    assert.ok(result.ok, result.response);
    await refusedOrPinned('pinned-space', result);
  });

  test('two From headers', async () => {
    const result = await send('pinned-two', [CEO, 'From: Boss <boss@corp.example>']);
    assert.ok(result.ok, result.response);
    await refusedOrPinned('pinned-two', result);
  });
});
