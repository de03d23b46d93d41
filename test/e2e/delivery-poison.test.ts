// Issue 12's acceptance: one message the ESP keeps answering 451 at DATA (a "poison" message)
// holds up nothing else. The others arrive within seconds of being sent, over the same single
// upstream; the poison message is retried on its own `queue.retry` schedule (2 s here) until
// `queue.maxAge`, then bounces to its sender.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sendMail } from '../helpers/client.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { explained, header, sleep, upstreamFor, waitUntil } from './relay-common.js';

describe('delivery: one message the ESP keeps deferring stalls nothing', () => {
  let esp: Esp;
  let relay: Relay;
  const poisonTries: number[] = [];

  before(async () => {
    esp = await startEsp();
    esp.onData = (message) => {
      if (header(message.raw, 'subject') !== 'poison') return undefined;
      poisonTries.push(Date.now());
      return { code: 451, message: '4.3.0 Content scanner unavailable, try again later' };
    };
    relay = await startRelay({
      config: {
        upstream: upstreamFor(esp),
        queue: { retry: ['2s'], maxAge: '9s' },
        bounces: { to: 'postmaster@corp.example' },
      },
    });
  });

  after(async () => {
    await relay?.stop();
    await esp?.close();
  });

  test('the others arrive within seconds; the poison one retries every ~2 s, then bounces', async () => {
    const poison = await sendMail({
      port: relay.port,
      from: 'app@corp.example',
      to: ['someone@example.com'],
      subject: 'poison',
    });
    assert.ok(poison.ok, poison.response);
    // Let the first 451 come back before the others are sent: it must not put the upstream aside.
    await explained(
      relay,
      waitUntil('the first 451', () => poisonTries.length >= 1 || undefined, 10_000),
    );
    const sentAt = new Map<string, number>();
    for (let i = 0; i < 10; i++) {
      const subject = `other ${i}`;
      sentAt.set(subject, Date.now());
      const sent = await sendMail({
        port: relay.port,
        from: 'app@corp.example',
        to: ['x@example.com'],
        subject,
      });
      assert.ok(sent.ok, sent.response);
      await sleep(200);
    }
    const others = await explained(
      relay,
      waitUntil(
        'the ten others at the ESP',
        () => {
          const got = esp.messages.filter((m) => (header(m.raw, 'subject') ?? '').startsWith('other '));
          return got.length === 10 ? got : undefined;
        },
        20_000,
      ),
    );
    for (const m of others) {
      const subject = header(m.raw, 'subject')!;
      const delay = m.receivedAt - sentAt.get(subject)!;
      assert.ok(delay < 5_000, `${subject} took ${delay} ms to arrive while the poison message waited`);
    }

    // Its own schedule: a 2 s retry, then the bounce once 9 s have passed.
    const bounce = await explained(
      relay,
      waitUntil('the bounce of the poison message', () => esp.messages.find((m) => m.from === ''), 30_000),
    );
    // An unchanged in-domain sender gets its own bounce.
    assert.deepEqual(bounce.to, ['app@corp.example']);
    assert.ok(poisonTries.length >= 3, `only ${poisonTries.length} tries in 9 s on a 2 s schedule`);
    for (let i = 1; i < poisonTries.length; i++) {
      const gap = poisonTries[i]! - poisonTries[i - 1]!;
      assert.ok(
        gap >= 1_500 && gap <= 4_500,
        `try ${i + 1} came ${gap} ms after the one before (schedule: 2 s)`,
      );
    }
    assert.ok(
      !esp.messages.some((m) => header(m.raw, 'subject') === 'poison'),
      'the poison message was delivered',
    );
  });
});
