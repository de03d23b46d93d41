// Issue 16, acceptance 3: routing by recipient domain. `upstreams: [{name: exchange,
// recipientDomains: [corp.example]}, {name: esp}]`: one message to x@corp.example and
// y@example.com reaches exchange for x only and esp for y only; a failure at one route does
// not touch the other recipient's status; failover stays within the matching upstreams.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sendMail } from '../helpers/client.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { runCli } from './cli-common.js';
import { upstreamFor, waitUntil } from './relay-common.js';
import { events } from './upstream-common.js';

describe('upstreams: routing by recipient domain', () => {
  let exchange: Esp;
  let esp: Esp;
  let relay: Relay;

  before(async () => {
    [exchange, esp] = await Promise.all([startEsp({ hostname: 'exchange.test' }), startEsp()]);
    const fast = { backoff: { initial: '1s', max: '2s' } };
    relay = await startRelay({
      config: {
        upstreams: [
          { name: 'exchange', ...upstreamFor(exchange), ...fast, recipientDomains: ['corp.example'] },
          { name: 'esp', ...upstreamFor(esp), ...fast },
        ],
        queue: { retry: ['1s'] },
      },
    });
  });

  after(async () => {
    await relay?.stop();
    await Promise.all([exchange?.close(), esp?.close()]);
  });

  const send = async (subject: string) => {
    const sent = await sendMail({
      port: relay.port,
      from: 'scanner@corp.example',
      to: ['x@corp.example', 'y@example.com'],
      subject,
    });
    assert.ok(sent.ok, `${subject} refused: ${sent.response}`);
    return sent.queueId!;
  };

  test('one message: x to exchange only, y to the ESP only, each logged with its upstream', async () => {
    const id = await send('split');
    await Promise.all([exchange.waitFor(1), esp.waitFor(1)]);
    assert.deepEqual(exchange.messages[0]!.to, ['x@corp.example']);
    assert.deepEqual(esp.messages[0]!.to, ['y@example.com']);
    // The same message went both ways.
    assert.match(exchange.messages[0]!.raw.toString(), /Subject: split/);
    assert.match(esp.messages[0]!.raw.toString(), /Subject: split/);
    const delivered = await waitUntil('two delivered lines', () => {
      const lines = events(relay, 'delivered', id);
      return lines.length === 2 ? lines : undefined;
    });
    assert.deepEqual(delivered.map((l) => l.upstream).sort(), ['esp', 'exchange']);
    const byUpstream = Object.fromEntries(delivered.map((l) => [String(l.upstream), l.to]));
    assert.deepEqual(byUpstream, { exchange: ['x@corp.example'], esp: ['y@example.com'] });
  });

  test('exchange refuses x for good: x bounces, y is delivered by the ESP', async () => {
    exchange.reset();
    esp.reset();
    exchange.onRcpt = (address) =>
      address === 'x@corp.example' ? { code: 550, message: '5.1.1 no such mailbox here' } : undefined;
    try {
      const id = await send('refused at exchange');
      await esp.waitFor(1);
      assert.deepEqual(esp.messages[0]!.to, ['y@example.com']);
      const failed = await waitUntil('x failed', () => events(relay, 'failed', id)[0]);
      assert.equal(failed.upstream, 'exchange');
      assert.match(String(failed.reply), /no such mailbox/);
      // The bounce goes to the sender, scanner@corp.example: by its route, to exchange.
      await exchange.waitFor(1);
      assert.deepEqual(exchange.messages[0]!.to, ['scanner@corp.example']);
      assert.equal(exchange.messages[0]!.from, '');
      assert.ok(esp.messages.every((m) => !m.to.includes('x@corp.example')));
    } finally {
      exchange.onRcpt = undefined;
    }
  });

  test('exchange down: y is delivered, x waits (never through the ESP), then goes to exchange', async () => {
    exchange.reset();
    esp.reset();
    await exchange.stop();
    const id = await send('exchange outage');
    await esp.waitFor(1);
    assert.deepEqual(esp.messages[0]!.to, ['y@example.com']);
    await waitUntil('x deferred', () => events(relay, 'deferred', id)[0]);
    // `queue show` names each recipient's upstream.
    const shown = await runCli(['queue', 'show', id, '-c', relay.configFile]);
    assert.equal(shown.code, 0, shown.stderr);
    assert.match(shown.stdout, /pending\s+x@corp\.example via exchange/);
    assert.match(shown.stdout, /delivered\s+y@example\.com via esp/);
    await exchange.start();
    await exchange.waitFor(1);
    assert.deepEqual(
      exchange.messages.map((m) => m.to),
      [['x@corp.example']],
    );
    assert.ok(
      esp.messages.every((m) => !m.to.includes('x@corp.example')),
      'x never went through the ESP',
    );
    assert.equal(esp.messages.filter((m) => m.to.includes('y@example.com')).length, 1, 'y sent once');
  });
});
