// The pieces of failover that need no network: the health back-off, the classification of
// throttling and of whole-upstream failures, routing by sender domain and the size limit
// learned from the upstreams. (Delivery itself is tested end to end in test/e2e/upstream-*.)
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';
import { parseConfig, type Upstream } from '../../src/config/load.js';
import { isThrottling, isUpstreamFailure, outcomeOf } from '../../src/delivery/classify.js';
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

describe('classification', () => {
  const reply = (responseCode: number, response: string, command = 'DATA') => ({
    responseCode,
    response,
    command,
    message: response,
  });

  test('throttling: 421, 4.7.x, or a 4xx that says so', () => {
    assert.ok(isThrottling(reply(421, '421 4.3.2 Service not available, closing channel')));
    assert.ok(isThrottling(reply(451, '451 4.7.500 Server busy. Please try again later.')));
    assert.ok(isThrottling(reply(454, '454 Throttling failure: Maximum sending rate exceeded.')));
    assert.ok(!isThrottling(reply(450, '450 4.2.1 Mailbox busy', 'RCPT TO')));
    assert.ok(!isThrottling(reply(550, '550 5.7.1 Rate limit? no: permanent')));
    assert.ok(!isThrottling({ code: 'ESOCKET', command: 'CONN', message: 'connect ECONNREFUSED' }));
  });

  test('a whole-upstream failure is temporary and not about one recipient', () => {
    assert.ok(isUpstreamFailure({ code: 'ESOCKET', command: 'CONN', message: 'connect ECONNREFUSED' }));
    assert.ok(isUpstreamFailure({ code: 'EAUTH', command: 'AUTH XOAUTH2', responseCode: 535, message: 'x' }));
    assert.ok(isUpstreamFailure(reply(451, '451 4.3.0 Try later', 'MAIL FROM')));
    assert.ok(!isUpstreamFailure(reply(450, '450 4.2.1 Mailbox busy', 'RCPT TO')));
    assert.ok(!isUpstreamFailure(reply(550, '550 5.1.1 No such user', 'RCPT TO')));
  });

  test('refusals before the transaction never bounce mail', () => {
    assert.equal(outcomeOf(reply(554, '554 5.7.1 Your IP is blocked', 'CONN')), 'temporary');
    assert.equal(outcomeOf(reply(530, '530 5.7.0 Authentication required', 'MAIL FROM')), 'temporary');
    assert.equal(outcomeOf(reply(550, '550 5.1.1 No such user', 'RCPT TO')), 'permanent');
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
