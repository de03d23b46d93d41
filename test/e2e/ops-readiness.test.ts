// Issue 14, readiness: GET /readyz answers 200 while the relay can deliver and 503 with the
// reason when every upstream is down or the queue is not moving, while /healthz (liveness)
// stays 200 throughout: an unreachable ESP is no reason to restart the relay.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { sendMail } from '../helpers/client.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { freePort, startRelay, type Relay } from '../helpers/relay.js';
import { httpGet } from './ops-common.js';
import { upstreamFor, waitUntil } from './relay-common.js';

/** Polls /readyz until its status is `status`; returns the body. */
async function readyz(port: number, status: number, timeoutMs = 20_000): Promise<string> {
  let last = { status: 0, body: '' };
  await waitUntil(
    () => `/readyz ${status} (last: ${last.status} ${last.body.trim()})`,
    async () => {
      last = await httpGet(port, '/readyz');
      return last.status === status;
    },
    timeoutMs,
    100,
  );
  return last.body;
}

describe('/readyz', { timeout: 120_000 }, () => {
  const relays: Relay[] = [];
  const esps: Esp[] = [];

  after(async () => {
    for (const relay of relays) await relay.stop();
    for (const esp of esps) await esp.close();
  });

  async function relayWith(config: Record<string, unknown>): Promise<{ relay: Relay; metrics: number }> {
    const metrics = await freePort();
    const relay = await startRelay({ config: { ...config, metrics: { host: '127.0.0.1', port: metrics } } });
    relays.push(relay);
    return { relay, metrics };
  }

  test('capture mode: ready', async () => {
    const { metrics } = await relayWith({});
    assert.deepEqual(await httpGet(metrics, '/readyz'), { status: 200, body: 'ready\n' });
    assert.equal((await httpGet(metrics, '/healthz')).status, 200);
  });

  test('the upstream on a closed port: 503 naming it; once it listens, 200 again', async () => {
    const port = await freePort();
    const { metrics } = await relayWith({
      upstream: { name: 'esp-closed', host: '127.0.0.1', port, tls: 'none', timeout: '5s' },
      health: { checkInterval: '1s' },
    });
    const body = await readyz(metrics, 503);
    assert.match(body, /^not ready: every upstream is down \(esp-closed: .+\)\n$/, body);
    assert.equal(body.trim().split('\n').length, 1, 'one line');
    assert.deepEqual(
      await httpGet(metrics, '/healthz'),
      { status: 200, body: 'ok\n' },
      'liveness is not readiness',
    );

    // An ESP appears on that port: found by the periodic check, with nothing queued.
    esps.push(await startEsp({ port, requireAuth: false, offerTls: false }));
    assert.equal(await readyz(metrics, 200), 'ready\n');
  });

  test('ESP stopped while idle: 503 while /healthz stays 200; ESP back: 200', async () => {
    const esp = await startEsp();
    esps.push(esp);
    const { relay, metrics } = await relayWith({
      upstream: upstreamFor(esp),
      health: { checkInterval: '1s' },
    });
    const sent = await sendMail({ port: relay.port, from: 'app@corp.example', to: ['ops@example.com'] });
    assert.ok(sent.ok, sent.response);
    await esp.waitFor(1);
    assert.equal(await readyz(metrics, 200), 'ready\n');

    await esp.stop();
    assert.match(await readyz(metrics, 503), /every upstream is down/);
    assert.equal((await httpGet(metrics, '/healthz')).status, 200);
    await relay.waitForOutput(/"event":"not_ready"/);

    await esp.start();
    assert.equal(await readyz(metrics, 200), 'ready\n');
    await relay.waitForOutput(/"event":"ready"/);
  });

  test('a message older than health.maxQueueAge: 503 "not moving"; delivered: 200', async () => {
    const esp = await startEsp();
    esps.push(esp);
    // This message's recipient is deferred (a 4xx to RCPT): the upstream itself stays up.
    esp.onRcpt = () => ({ code: 450, message: '4.2.1 Mailbox busy, try later' });
    const { relay, metrics } = await relayWith({
      upstream: upstreamFor(esp),
      queue: { retry: ['1s'] },
      health: { maxQueueAge: '2s', checkInterval: '1s' },
    });
    const sent = await sendMail({ port: relay.port, from: 'app@corp.example', to: ['busy@example.com'] });
    assert.ok(sent.ok, sent.response);
    const body = await readyz(metrics, 503);
    assert.match(
      body,
      /^not ready: the queue is not moving: its oldest message is \S+ old \(health\.maxQueueAge 2s\)\n$/,
      body,
    );

    esp.onRcpt = undefined;
    await esp.waitFor(1);
    assert.equal(await readyz(metrics, 200), 'ready\n');
  });
});
