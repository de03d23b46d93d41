// upstream.servername: the ESP's certificate is always verified; when the relay reaches the ESP
// by an address (or an alias) that the certificate does not carry, `servername` names the one
// it does. Without it such a certificate is refused and the mail waits; with it, it goes out.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sendMail } from '../helpers/client.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { runCli, show } from './cli-common.js';
import { explained, queuedIds, upstreamFor, waitUntil } from './relay-common.js';
import { events } from './upstream-common.js';

describe('relay: the name the ESP certificate is checked against', () => {
  let esp: Esp;
  const relays: Relay[] = [];

  before(async () => {
    // A certificate for a name only: connecting to 127.0.0.1 does not match it.
    esp = await startEsp({ certHosts: ['esp.corp.test'] });
  });

  after(async () => {
    await Promise.all(relays.map((r) => r.stop()));
    await esp?.close();
  });

  test('a certificate that does not name the host is refused: the message waits, nothing is sent', async () => {
    const relay = await startRelay({ config: { upstream: upstreamFor(esp), queue: { retry: ['1h'] } } });
    relays.push(relay);
    const sent = await sendMail({
      port: relay.port,
      from: 'scanner@corp.example',
      to: ['a@example.com'],
      raw: 'Subject: no name\r\n\r\nx\r\n',
    });
    assert.ok(sent.ok, sent.response);
    const deferred = await explained(
      relay,
      waitUntil('its deferral', () => events(relay, 'deferred', sent.queueId)[0]),
    );
    assert.match(String(deferred.reply), /esp\.corp\.test|altnames|certificate/i, 'the log says why');
    assert.deepEqual(await queuedIds(relay.spoolDir), [sent.queueId], 'still queued');
    assert.equal(esp.messages.length, 0);
  });

  test('with servername set to the name the certificate carries, it is delivered', async () => {
    const relay = await startRelay({
      config: { upstream: { ...upstreamFor(esp), servername: 'esp.corp.test' } },
    });
    relays.push(relay);
    const sent = await sendMail({
      port: relay.port,
      from: 'scanner@corp.example',
      to: ['b@example.com'],
      raw: 'Subject: by name\r\n\r\nx\r\n',
    });
    assert.ok(sent.ok, sent.response);
    await waitUntil('the message at the ESP', () => esp.messages.find((m) => m.to.includes('b@example.com')));
    assert.ok(
      esp.messages.every((m) => m.secure),
      'over TLS',
    );
    // `upstream verify` checks the certificate against the same name as the relay.
    const verify = await runCli(['upstream', 'verify', '-c', relay.configFile], { cwd: relay.dir });
    assert.equal(verify.code, 0, show(verify));
    assert.match(verify.stdout, /certificate trusted/, show(verify));
  });
});
