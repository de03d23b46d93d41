// Acceptance 1 of issue 5: scraping /metrics after 10 accepted and 3 refused messages shows
// those counts by source and reason; /healthz turns non-200 when the spool stops being writable.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sendMail } from '../helpers/client.js';
import { freePort, startRelay, type Relay } from '../helpers/relay.js';
import { waitUntil } from './relay-common.js';
import { httpGet, metricValue } from './ops-common.js';

describe('ops: /metrics and /healthz', () => {
  let relay: Relay;
  let metricsPort: number;

  before(async () => {
    metricsPort = await freePort();
    relay = await startRelay({
      config: {
        // Capture mode: deliveries go to the outbox, counted under upstream "outbox".
        allowlist: [
          { cidr: '127.0.0.1/32', name: 'printers', maxMessageSize: '2KB' },
          { cidr: '127.0.0.3/32', name: 'monitoring' },
        ],
        metrics: { host: '127.0.0.1', port: metricsPort },
      },
    });
  });

  after(async () => {
    await relay?.stop();
  });

  test('10 accepted and 3 refused messages show by source and reason', async () => {
    const send = (localAddress: string, text = 'A scanned page.\n') =>
      sendMail({
        port: relay.port,
        localAddress,
        from: 'scanner@corp.example',
        to: ['alice@example.com'],
        text,
      });
    for (let i = 0; i < 7; i++) {
      const r = await send('127.0.0.1');
      assert.ok(r.ok, `printers message ${i} refused: ${r.response}`);
    }
    for (let i = 0; i < 3; i++) {
      const r = await send('127.0.0.3');
      assert.ok(r.ok, `monitoring message ${i} refused: ${r.response}`);
    }
    // Refused: twice a device outside the allowlist, once a message over the source's size limit.
    for (let i = 0; i < 2; i++) {
      const r = await send('127.0.0.2');
      assert.equal(r.ok, false);
      assert.match(r.response, /5\.7\.1/);
    }
    const big = await send('127.0.0.1', `${'x'.repeat(70)}\n`.repeat(100));
    assert.equal(big.ok, false);
    assert.match(big.response, /5\.3\.4/);

    const { status, body } = await httpGet(metricsPort, '/metrics');
    assert.equal(status, 200);
    assert.equal(metricValue(body, 'smarthost_messages_accepted_total', { source: 'printers' }), 7);
    assert.equal(metricValue(body, 'smarthost_messages_accepted_total', { source: 'monitoring' }), 3);
    assert.equal(metricValue(body, 'smarthost_messages_accepted_total'), 10);
    assert.equal(
      metricValue(body, 'smarthost_messages_refused_total', { reason: 'not_allowed', source: '(unknown)' }),
      2,
    );
    assert.equal(
      metricValue(body, 'smarthost_messages_refused_total', { reason: 'size', source: 'printers' }),
      1,
    );
    assert.equal(metricValue(body, 'smarthost_messages_refused_total'), 3);
    assert.ok(
      (metricValue(body, 'smarthost_connections_total') ?? 0) >= 13,
      'every client connection is counted',
    );
    assert.ok((metricValue(body, 'smarthost_received_bytes_total', { source: 'printers' }) ?? 0) > 0);
    assert.notEqual(metricValue(body, 'smarthost_queue_depth'), undefined);
    assert.notEqual(metricValue(body, 'smarthost_queue_oldest_message_age_seconds'), undefined);
    assert.equal(metricValue(body, 'smarthost_up'), 1);

    // Every accepted message is delivered (captured) once: attempts by outcome and upstream.
    const delivered = await waitUntil('10 delivered attempts and an empty queue in /metrics', async () => {
      const text = (await httpGet(metricsPort, '/metrics')).body;
      const n = metricValue(text, 'smarthost_delivery_attempts_total', {
        outcome: 'delivered',
        upstream: 'outbox',
      });
      // The attempt is counted before its files leave the queue: wait for both.
      const drained =
        metricValue(text, 'smarthost_queue_depth') === 0 &&
        metricValue(text, 'smarthost_queue_oldest_message_age_seconds') === 0;
      return n === 10 && drained ? text : undefined;
    });
    assert.equal(
      metricValue(delivered, 'smarthost_upstream_latency_seconds_count', { upstream: 'outbox' }),
      10,
    );
    assert.ok((metricValue(delivered, 'smarthost_relayed_bytes_total', { upstream: 'outbox' }) ?? 0) > 0);
    assert.equal(metricValue(delivered, 'smarthost_queue_depth'), 0);
    assert.equal(metricValue(delivered, 'smarthost_queue_oldest_message_age_seconds'), 0);
  });

  test('/healthz is 200 while healthy, 503 with the reason once the spool cannot be written', async () => {
    const ok = await httpGet(metricsPort, '/healthz');
    assert.equal(ok.status, 200, ok.body);

    // chmod does not stop root, so the spool's tmp/ folder is replaced by a regular file:
    // nothing can be created in it, for root or anyone.
    const tmp = path.join(relay.spoolDir, 'tmp');
    await fs.rename(tmp, `${tmp}.moved`);
    await fs.writeFile(tmp, 'not a directory');
    try {
      const bad = await httpGet(metricsPort, '/healthz');
      assert.equal(bad.status, 503);
      assert.match(bad.body, /spool .* is not writable/);
      const scraped = await httpGet(metricsPort, '/metrics');
      assert.equal(metricValue(scraped.body, 'smarthost_up'), 0);
    } finally {
      await fs.unlink(tmp);
      await fs.rename(`${tmp}.moved`, tmp);
    }
    const again = await httpGet(metricsPort, '/healthz');
    assert.equal(again.status, 200, 'healthy again once the spool is writable');
    assert.equal((await httpGet(metricsPort, '/nothing-here')).status, 404);
  });
});
