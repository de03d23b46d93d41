// Acceptance 3 of issue 6, at a faster pace so that it runs in seconds: with
// `rateLimit: 20/s` and 60 messages queued at once, none is refused to the client, all arrive,
// and the ESP stand-in never sees more than 20 in any second (by its own receive times).
// The messages are queued while the ESP is down and all fall due together when it is back:
// nothing but the pace stands between the queue and the ESP. Then a throttling reply (421
// 4.7.0) halves the pace, and the refused message is retried, not bounced.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sendMail } from '../helpers/client.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { countBy, header, queuedIds, upstreamFor, waitUntil } from './relay-common.js';
import { events, maxInWindow } from './upstream-common.js';

const COUNT = 60;
const PER_SECOND = 20;

describe('relay: pacing to the ESP’s quota', () => {
  let esp: Esp;
  let relay: Relay;

  before(async () => {
    esp = await startEsp();
    relay = await startRelay({
      config: {
        upstream: { ...upstreamFor(esp), rateLimit: `${PER_SECOND}/s`, maxConnections: 5 },
        queue: { retry: ['1s'], concurrency: 50 },
      },
    });
  });

  after(async () => {
    await relay?.stop();
    await esp?.close();
  });

  test(`${COUNT} messages at ${PER_SECOND}/s: none refused, at most ${PER_SECOND} in any second`, async () => {
    await esp.stop();
    let next = 0;
    const client = async () => {
      for (let i = next++; i < COUNT; i = next++) {
        const sent = await sendMail({
          port: relay.port,
          from: 'monitor@corp.example',
          to: ['ops@example.com'],
          subject: `paced-${i}`,
        });
        assert.ok(sent.ok, `message ${i} refused: ${sent.response}`);
      }
    };
    await Promise.all(Array.from({ length: 6 }, client));
    await waitUntil('every message tried once', async () => {
      const queued = await queuedIds(relay.spoolDir);
      return queued.length === COUNT && relay.output().split('"event":"deferred"').length > COUNT;
    });

    await esp.start();
    await esp.waitFor(COUNT, 30_000);
    const counts = countBy(esp.messages, (m) => header(m.raw, 'subject'));
    assert.equal(counts.size, COUNT, 'every message arrived');
    assert.ok(
      [...counts.values()].every((n) => n === 1),
      'each once',
    );
    const busiest = maxInWindow(
      esp.messages.map((m) => m.receivedAt),
      1000,
    );
    assert.ok(busiest <= PER_SECOND, `${busiest} messages within one second`);
    await waitUntil('an empty queue', async () => (await queuedIds(relay.spoolDir)).length === 0);
  });

  test('a throttling reply halves the pace; the message goes out later', async () => {
    let refusals = 0;
    esp.onData = () => {
      if (refusals > 0) return undefined;
      refusals++;
      return { code: 421, message: '4.7.0 Too many messages, slow down' };
    };
    const sent = await sendMail({
      port: relay.port,
      from: 'monitor@corp.example',
      to: ['ops@example.com'],
      subject: 'throttled',
    });
    assert.ok(sent.ok, sent.response);
    await esp.waitFor(COUNT + 1);
    const throttled = events(relay, 'upstream_throttled');
    assert.equal(throttled.length, 1);
    assert.equal(throttled[0]!.pace, `${PER_SECOND / 2}/1s`);
    assert.match(String(throttled[0]!.reason), /421 4\.7\.0/);
    assert.equal(events(relay, 'deferred', sent.queueId).length, 1, 'deferred once, not bounced');
    assert.equal(header(esp.messages.at(-1)!.raw, 'subject'), 'throttled');
  });
});
