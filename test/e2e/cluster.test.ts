// Cluster mode end to end (issue 15): two real relay processes sharing one real redis-server
// (started here; skipped where redis-server is absent). A source's rate is counted over both,
// failed logins spread over both lock out, `smarthost stats --cluster` and `smarthost cluster
// status` see both; Redis killed mid-run: both keep accepting on their own limits, say so once
// (log, metric, status), and share again once Redis is back. And a second relay can never start
// on a spool another one holds.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { hashPassword } from '../../src/policy/passwords.js';
import { rawSmtpSession, sendMail } from '../helpers/client.js';
import { redisSkip, startRedis, type RedisServer } from '../helpers/redis.js';
import { freePort, RelayStartError, startRelay, type Relay } from '../helpers/relay.js';
import { runCli, show } from './cli-common.js';
import { waitUntil } from './relay-common.js';
import { events } from './upstream-common.js';

const PASSWORD = 'crm-password-15';
const authPlain = (user: string, pass: string) =>
  `AUTH PLAIN ${Buffer.from(`\0${user}\0${pass}`).toString('base64')}`;

async function send(relay: Relay, localAddress = '127.0.0.1') {
  return sendMail({
    port: relay.port,
    localAddress,
    from: 'scanner@corp.example',
    to: ['someone@corp.example'],
    subject: 'cluster test',
  });
}

async function metric(port: number, name: string): Promise<string | undefined> {
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text();
  return new RegExp(`^${name} (\\S+)$`, 'm').exec(text)?.[1];
}

describe('cluster mode: two relays, one Redis', { skip: redisSkip }, () => {
  let redis: RedisServer;
  let a: Relay;
  let b: Relay;
  const metricsPorts: number[] = [];

  before(async () => {
    redis = await startRedis();
    const users = [{ name: 'crm', password: await hashPassword(PASSWORD) }];
    const config = async () => {
      const metricsPort = await freePort();
      metricsPorts.push(metricsPort);
      return {
        cluster: { redis: redis.url, name: 'e2e', timeout: '200ms' },
        metrics: { host: '127.0.0.1', port: metricsPort },
        limits: { maxAuthFailures: 3 },
        allowlist: [
          { cidr: '127.0.0.1/32', name: 'office', rateLimit: '10/min' },
          { cidr: '127.0.0.2/32', name: 'steady', rateLimit: '100/min' },
          { cidr: '127.0.0.3/32', name: 'after-outage', rateLimit: '3/min' },
          { cidr: '127.0.0.5/32', name: 'legacy', allowInsecureAuth: true },
          { cidr: '127.0.0.6/32', name: 'legacy-too', allowInsecureAuth: true },
        ],
        users,
      };
    };
    [a, b] = await Promise.all([
      startRelay({ config: await config() }),
      startRelay({ config: await config() }),
    ]);
    await Promise.all([a, b].map((r) => r.waitForOutput(/cluster_connected/)));
  });

  after(async () => {
    await Promise.all([a?.stop(), b?.stop()]);
    await redis?.kill();
  });

  test('10/min over both relays: of 20 sent alternately, 10 are accepted, the rest 450 4.7.1', async () => {
    const results = [];
    for (let i = 0; i < 20; i++) results.push(await send(i % 2 === 0 ? a : b));
    const accepted = results.filter((r) => r.ok);
    assert.ok(accepted.length >= 10 && accepted.length <= 11, `accepted ${accepted.length}`);
    for (const r of results.filter((r) => !r.ok)) {
      assert.ok(!r.ok);
      assert.equal(r.code, 450, r.response);
      assert.match(r.response, /^450 4\.7\.1 Rate limit 10\/min exceeded for source office/);
    }
    // Each relay alone took part: neither could have refused on its own count (10 each).
    assert.ok(results.filter((r, i) => r.ok && i % 2 === 0).length >= 4);
    assert.ok(results.filter((r, i) => r.ok && i % 2 === 1).length >= 4);
  });

  test('`stats --cluster` counts both relays; `stats` this one alone', async () => {
    const cluster = await waitUntil('the shared counts of both relays', async () => {
      const result = await runCli(['stats', '--cluster', '--json', '-c', a.configFile]);
      assert.equal(result.code, 0, show(result));
      const report = JSON.parse(result.stdout) as { totals: { messages: number; rateLimited: number } };
      return report.totals.messages >= 10 && report.totals.rateLimited >= 9 ? report : undefined;
    });
    assert.ok(cluster.totals.messages <= 11);
    const own = await runCli(['stats', '--json', '-c', a.configFile]);
    const mine = JSON.parse(own.stdout) as { totals: { messages: number } };
    assert.ok(mine.totals.messages < cluster.totals.messages, show(own));
    const text = await runCli(['stats', '--cluster', '-c', b.configFile]);
    assert.match(text.stdout, /All relays of the cluster/);
  });

  // 127.0.0.5 and .6 are allowlisted: a lockout blocks their AUTH only (454), never their mail.
  test('failed logins spread over both relays lock the address out, and the username elsewhere', async () => {
    const bad = authPlain('crm', 'wrong');
    const onA = await rawSmtpSession(a.port, ['EHLO client.test', bad, bad, 'QUIT'], {
      localAddress: '127.0.0.5',
    });
    assert.match(onA[2] ?? '', /^535 5\.7\.8 /);
    const onB = await rawSmtpSession(b.port, ['EHLO client.test', bad, authPlain('crm', PASSWORD), 'QUIT'], {
      localAddress: '127.0.0.5',
    });
    assert.match(onB[2] ?? '', /^454 4\.7\.0 Too many failed logins from 127\.0\.0\.5 \(3 within 10m/);
    // The right password, through the other relay: still locked out of AUTH, but it relays.
    const later = await rawSmtpSession(
      a.port,
      ['EHLO client.test', authPlain('crm', PASSWORD), 'MAIL FROM:<scanner@corp.example>', 'QUIT'],
      { localAddress: '127.0.0.5' },
    );
    assert.match(later[2] ?? '', /^454 4\.7\.0 Too many failed logins from 127\.0\.0\.5/);
    assert.match(later[3] ?? '', /^250 /);
    // The username is locked too, from another address.
    const elsewhere = await rawSmtpSession(b.port, ['EHLO client.test', authPlain('crm', PASSWORD), 'QUIT'], {
      localAddress: '127.0.0.6',
    });
    assert.match(elsewhere[2] ?? '', /^454 4\.7\.0 Too many failed logins for this user/);
    assert.doesNotMatch(a.output() + b.output(), /wrong/, 'the password tried is never logged');
  });

  test('hostile usernames (control characters, 4 KB) are counted like any other, in bounded keys', async () => {
    const hostile = [`x\r\nFLUSHALL\r\n${'\u0000'.repeat(3)}`, 'y'.repeat(4000)];
    for (const user of hostile) {
      const replies = await rawSmtpSession(b.port, ['EHLO client.test', authPlain(user, 'nope'), 'QUIT'], {
        localAddress: '127.0.0.6',
      });
      assert.match(replies[2] ?? '', /^(535 5\.7\.8|5\d\d) /, replies.join(' / '));
    }
    // Redis still holds the limits (FLUSHALL was a username, not a command): the lockout stands.
    const later = await rawSmtpSession(a.port, ['EHLO client.test', authPlain('crm', PASSWORD), 'QUIT'], {
      localAddress: '127.0.0.5',
    });
    assert.match(later[2] ?? '', /^454 4\.7\.0 Too many failed logins/);
  });

  test('`cluster status` lists both relays with their queue sizes and versions', async () => {
    const result = await runCli(['cluster', 'status', '--json', '-c', a.configFile]);
    assert.equal(result.code, 0, show(result));
    const status = JSON.parse(result.stdout) as {
      degraded: boolean;
      nodes: { pid: number; queued: number; version: string }[];
    };
    assert.equal(status.degraded, false);
    assert.deepEqual(status.nodes.map((n) => n.pid).sort(), [a.process.pid, b.process.pid].sort());
    for (const n of status.nodes) {
      assert.equal(typeof n.queued, 'number');
      assert.match(n.version, /^\d+\.\d+\.\d+/);
    }
    const text = await runCli(['cluster', 'status', '-c', b.configFile]);
    assert.match(text.stdout, /Live relays: 2/);
    assert.match(text.stdout, /\(this one\)/);
  });

  test('a second relay on the same spool refuses to start, naming the first', async () => {
    await assert.rejects(
      startRelay({ config: { spool: { dir: a.spoolDir } }, readyTimeoutMs: 10_000 }),
      (err: Error) => {
        assert.ok(err instanceof RelayStartError, String(err));
        assert.match(err.output, new RegExp(`in use by another smarthost \\(pid ${a.process.pid}`));
        return true;
      },
    );
    assert.ok(a.running);
  });

  test('Redis killed: both keep accepting on their own limits, say so once; back: shared again', async () => {
    await redis.kill();
    for (let i = 0; i < 6; i++) {
      const result = await send(i % 2 === 0 ? a : b, '127.0.0.2');
      assert.ok(result.ok, result.response);
    }
    for (const [i, relay] of [a, b].entries()) {
      await relay.waitForOutput(/cluster_degraded/);
      assert.equal(events(relay, 'cluster_degraded').length, 1, 'logged once');
      assert.equal(await metric(metricsPorts[i]!, 'smarthost_cluster_degraded'), '1');
    }
    const status = await runCli(['cluster', 'status', '--json', '-c', a.configFile]);
    assert.equal(status.code, 1, show(status));
    assert.equal((JSON.parse(status.stdout) as { degraded: boolean }).degraded, true);
    // Within its own limit on each relay: refused only past 3 on one relay, not 3 over both.
    const local = [];
    for (let i = 0; i < 4; i++) local.push((await send(a, '127.0.0.3')).ok);
    assert.deepEqual(local, [true, true, true, false]);
    assert.ok((await send(b, '127.0.0.3')).ok, 'the other relay counts on its own while degraded');

    await redis.start();
    for (const [i, relay] of [a, b].entries()) {
      await relay.waitForOutput(/cluster_restored/, 15_000);
      assert.equal(await metric(metricsPorts[i]!, 'smarthost_cluster_degraded'), '0');
    }
    assert.equal(events(a, 'cluster_degraded').length, 1);
    // Shared again (Redis came back empty): 3/min over both.
    const shared = [];
    for (let i = 0; i < 4; i++) shared.push((await send(i % 2 === 0 ? a : b, '127.0.0.3')).ok);
    assert.deepEqual(shared, [true, true, true, false]);
  });
});
