// A burst through the real relay (queue.acceptFirst, src/queue/accept-first.ts): twenty devices
// each opening a connection per message. Every message is answered 250 and reaches the ESP
// exactly once; messages held while the burst lasts go as soon as it eases, long before the
// setting's two minutes; and a message arriving alone afterwards goes at once.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { rawSmtpSession } from '../helpers/client.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { upstreamFor } from './relay-common.js';

const DEVICES = 20;
const EACH = 30;

/** One message on a connection of its own, as a printer or a monitoring script sends it. */
async function sendOne(port: number, subject: string): Promise<string> {
  const replies = await rawSmtpSession(port, [
    'EHLO device.test',
    'MAIL FROM:<alerts@corp.example>',
    'RCPT TO:<ops@example.com>',
    'DATA',
    `From: alerts@corp.example\r\nTo: ops@example.com\r\nSubject: ${subject}\r\n\r\nload high\r\n.`,
    'QUIT',
  ]);
  return replies[5] ?? '(no reply)';
}

describe('relay: a burst of messages, acceptance first', { timeout: 180_000 }, () => {
  let esp: Esp;
  let relay: Relay;

  before(async () => {
    esp = await startEsp();
    relay = await startRelay({
      config: {
        allowlist: [{ cidr: '127.0.0.1/32', name: 'monitoring' }],
        upstream: upstreamFor(esp),
        queue: { acceptFirst: '120s' },
        log: { level: 'info' },
      },
    });
  });

  after(async () => {
    await relay?.stop();
    await esp?.stop();
  });

  test('every message of the burst is accepted, then delivered once, soon after the burst', async (t) => {
    const replies = await Promise.all(
      Array.from({ length: DEVICES }, async (_, device) => {
        const mine: string[] = [];
        for (let i = 0; i < EACH; i++) mine.push(await sendOne(relay.port, `alert ${device}-${i}`));
        return mine;
      }),
    );
    const acceptedAt = Date.now();
    const refused = replies.flat().filter((r) => !r.startsWith('250 '));
    assert.deepEqual(refused, [], 'every message answered 250');

    // Well within the two minutes a message may wait: released when the burst eased.
    await esp.waitFor(DEVICES * EACH, 60_000);
    const subjects = esp.messages.map((m) => /^Subject: (.*)$/m.exec(m.raw.toString('latin1'))?.[1]);
    assert.equal(new Set(subjects).size, DEVICES * EACH, 'each message once');
    assert.equal(esp.messages.length, DEVICES * EACH);

    const log = relay.output();
    const started = (log.match(/"event":"burst_started"/g) ?? []).length;
    const ended = (log.match(/"event":"burst_ended"/g) ?? []).length;
    t.diagnostic(`bursts seen: ${started}; delivered ${Date.now() - acceptedAt} ms after the last 250`);
    // Whether the relay was busy enough to hold depends on the machine; each burst it saw ended.
    assert.equal(ended, started, 'every burst that began has ended and released its messages');
  });

  test('a message arriving alone afterwards is delivered at once, not held', async () => {
    const before = esp.messages.length;
    assert.match(await sendOne(relay.port, 'alone'), /^250 /);
    await esp.waitFor(before + 1, 10_000);
  });
});
