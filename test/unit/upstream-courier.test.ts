// The pieces of failover that need no network: the health back-off, routing by sender domain
// and the size limit learned from the upstreams. (The classification of failures is in
// delivery-decision.test.ts.) (Delivery itself is tested end to end in test/e2e/upstream-*.)
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { parseConfig, type Upstream } from '../../src/config/load.js';
import { SIZE_HEADROOM, SmtpCourier } from '../../src/delivery/smtp-courier.js';
import { UpstreamHealth } from '../../src/upstream/health.js';

describe('upstream health', () => {
  test('down for 30 s, doubling up to 5 min; failures while down do not count; a success resets', () => {
    const health = new UpstreamHealth({ initialMs: 30_000, maxMs: 300_000 });
    let t = 0;
    const periods: number[] = [];
    for (let i = 0; i < 6; i++) {
      const ms = health.failed(t);
      assert.ok(ms !== undefined);
      periods.push(ms);
      assert.ok(health.isDown(t));
      assert.equal(health.failed(t + 1), undefined, 'already down');
      t += ms;
      assert.ok(!health.isDown(t), 'tried again once the period is over');
    }
    assert.deepEqual(periods, [30_000, 60_000, 120_000, 240_000, 300_000, 300_000]);
    assert.equal(health.succeeded(), true, 'back after failures');
    assert.equal(health.succeeded(), false);
    assert.equal(health.failed(t), 30_000, 'the back-off starts over');
  });
});

describe('routing by sender domain and the learned size limit', () => {
  const config = parseConfig(
    {
      upstreams: [
        { name: 'general', host: '127.0.0.1', port: 2 },
        { name: 'brand-b', host: '127.0.0.1', port: 3, senderDomains: ['brand-b.example'] },
        { name: 'general-2', host: '127.0.0.1', port: 4 },
      ],
    },
    { env: {}, baseDir: '/', source: 'test' },
  );
  const courier = new SmtpCourier(config.upstreams, 'relay.test');
  after(() => courier.close());
  const names = (sender: string) => courier.route(sender).map((c) => c.name);

  test('a routed domain goes only to its upstreams; others to the general ones, in order', () => {
    assert.deepEqual(names('scanner@brand-b.example'), ['brand-b']);
    assert.deepEqual(names('scanner@BRAND-B.example'), ['brand-b']);
    assert.deepEqual(names('scanner@corp.example'), ['general', 'general-2']);
    assert.deepEqual(names('scanner@sub.brand-b.example'), ['general', 'general-2']);
    assert.deepEqual(names(''), ['general', 'general-2'], 'bounces (null sender)');
  });

  test('with no general upstream, other domains use all of them', () => {
    const only: Upstream[] = config.upstreams.map((u) => ({ ...u, senderDomains: [`${u.name}.example`] }));
    const routed = new SmtpCourier(only, 'relay.test');
    try {
      assert.deepEqual(
        routed.route('x@elsewhere.example').map((c) => c.name),
        ['general', 'brand-b', 'general-2'],
      );
    } finally {
      void routed.close();
    }
  });

  test('size limit: unknown until every candidate has declared one; the largest of them counts', () => {
    const [general, brandB, general2] = courier.clients;
    assert.equal(courier.sizeLimit(), undefined);
    general!.maxSize = 10_000_000;
    assert.equal(courier.sizeLimit('a@corp.example'), undefined, 'general-2 not known yet');
    general2!.maxSize = 20_000_000;
    assert.equal(courier.sizeLimit('a@corp.example'), 20_000_000 - SIZE_HEADROOM);
    assert.equal(courier.sizeLimit('a@brand-b.example'), undefined);
    brandB!.maxSize = 5_000_000;
    assert.equal(courier.sizeLimit('a@brand-b.example'), 5_000_000 - SIZE_HEADROOM);
    general2!.maxSize = 0; // declares no limit
    assert.equal(courier.sizeLimit('a@corp.example'), undefined);
  });
});
