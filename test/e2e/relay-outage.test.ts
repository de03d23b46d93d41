// Acceptance 4 of issue 2: the upstream is down while 200 messages are accepted; once it is
// back, all 200 arrive, each exactly once.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sendMail } from '../helpers/client.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { countBy, explained, header, queuedIds, sleep, upstreamFor, waitUntil } from './relay-common.js';

const COUNT = 200;
const CLIENTS = 10;

describe('relay: upstream outage', () => {
  let esp: Esp;
  let relay: Relay;

  before(async () => {
    esp = await startEsp();
    relay = await startRelay({
      config: { upstream: upstreamFor(esp), queue: { retry: ['1s'] } },
    });
  });

  after(async () => {
    await relay?.stop();
    await esp?.close();
  });

  test(`${COUNT} messages accepted while the ESP is down all arrive once it is back, once each`, async () => {
    // First a message through, so the outage cuts an established connection pool.
    const first = await sendMail({ port: relay.port, from: 'monitor@corp.example', to: ['ops@example.com'] });
    assert.ok(first.ok, first.response);
    await explained(relay, esp.waitFor(1));
    await esp.stop();
    esp.reset();
    const queueIds: string[] = [];
    let next = 0;
    const client = async () => {
      for (let i = next++; i < COUNT; i = next++) {
        const sent = await sendMail({
          port: relay.port,
          from: 'monitor@corp.example',
          to: [`ops${i % 7}@example.com`],
          subject: `outage-${i}`,
        });
        assert.ok(sent.ok, `message ${i} refused while the upstream is down: ${sent.response}`);
        queueIds.push(sent.queueId!);
      }
    };
    await Promise.all(Array.from({ length: CLIENTS }, client));
    assert.equal(new Set(queueIds).size, COUNT, 'a distinct queue id for each message');

    // The relay has tried (and failed) meanwhile: nothing could have arrived.
    await relay.waitForOutput(/"event":"deferred"/);
    assert.equal(esp.messages.length, 0);
    assert.ok((await queuedIds(relay.spoolDir)).length > 0, 'the messages wait in the queue');

    await esp.start();
    await explained(relay, esp.waitFor(COUNT, 60_000));
    // Every message is done, and nothing more comes after the queue is empty.
    await explained(
      relay,
      waitUntil('an empty queue', async () => (await queuedIds(relay.spoolDir)).length === 0, 30_000),
    );
    await sleep(1500);

    const counts = countBy(esp.messages, (m) => header(m.raw, 'subject'));
    const missing = Array.from({ length: COUNT }, (_, i) => `outage-${i}`).filter((s) => !counts.has(s));
    const twice = [...counts].filter(([, n]) => n > 1).map(([s]) => s);
    assert.deepEqual(missing, [], 'every message arrived');
    assert.deepEqual(twice, [], 'no message arrived twice');
    assert.equal(esp.messages.length, COUNT);
  });
});
