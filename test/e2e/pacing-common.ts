// The pacing acceptance of issue 12 (`rateLimit: 30/min` with 20 queued: at most 2 deliveries in
// any one second, never more than 30 in any 60 s, all delivered), as one scenario run at a
// given speed: `speed` 1 is the exact case (about 40 s, in the reliability suite), 4 runs it at
// 120/min with every window a quarter as long (about 10 s, in `npm test`).
//
// The 20 messages are accepted while the ESP is down, so that all of them are queued and fall
// due together when it is back: nothing but the pace stands between the queue and the ESP.
import assert from 'node:assert/strict';
import { sendMail } from '../helpers/client.js';
import { startEsp } from '../helpers/esp.js';
import { startRelay } from '../helpers/relay.js';
import { countBy, explained, header, queuedIds, upstreamFor, waitUntil } from './relay-common.js';
import { events, maxInWindow } from './upstream-common.js';

const COUNT = 20;

export async function pacedBacklog(speed: number): Promise<void> {
  const perMinute = 30 * speed;
  const second = 1000 / speed;
  const esp = await startEsp();
  const relay = await startRelay({
    config: {
      // No burst: the default (1) is what is under test.
      upstream: { ...upstreamFor(esp), rateLimit: `${perMinute}/min`, backoff: { initial: '1s', max: '1s' } },
      queue: { retry: ['1s'], concurrency: 50 },
    },
  });
  try {
    await esp.stop();
    const ids: string[] = [];
    for (let i = 0; i < COUNT; i++) {
      const sent = await sendMail({
        port: relay.port,
        from: 'monitor@corp.example',
        to: ['ops@example.com'],
        subject: `backlog-${i}`,
      });
      assert.ok(sent.ok, `message ${i} refused: ${sent.response}`);
      ids.push(sent.queueId!);
    }
    // Every message tried once against the ESP that is down: all queued, none delivered.
    await waitUntil('every message deferred once', () =>
      ids.every((id) => events(relay, 'deferred', id).length),
    );
    assert.equal((await queuedIds(relay.spoolDir)).length, COUNT);

    await esp.start();
    await explained(relay, esp.waitFor(COUNT, (COUNT * 60_000) / perMinute + 30_000));
    const counts = countBy(esp.messages, (m) => header(m.raw, 'subject'));
    assert.equal(counts.size, COUNT, 'every message arrived');
    assert.ok(
      [...counts.values()].every((n) => n === 1),
      'each once',
    );
    const times = esp.messages.map((m) => m.receivedAt);
    const inSecond = maxInWindow(times, second);
    assert.ok(inSecond <= 2, `${inSecond} deliveries within ${second} ms (one second at 30/min)`);
    const inMinute = maxInWindow(times, 60 * second);
    assert.ok(inMinute <= 30, `${inMinute} deliveries within ${60 * second} ms (a minute at 30/min)`);
    await waitUntil('an empty queue', async () => (await queuedIds(relay.spoolDir)).length === 0);
  } finally {
    await relay.stop();
    await esp.close();
  }
}
