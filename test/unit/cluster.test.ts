// Cluster mode's parts against a real redis-server (started here, skipped where absent): the
// Lua scripts (token bucket, failed logins, GCRA pace) shared by two clients as two relays
// would, the fallback to local limits when Redis goes away (logged once) and the way back, the
// shared traffic counters and the heartbeats. And the config: no password ever shown.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { parseConfig } from '../../src/config/load.js';
import { parseRate } from '../../src/config/units.js';
import { ClusterClient, keyPart } from '../../src/cluster/client.js';
import { Cluster } from '../../src/cluster/cluster.js';
import { LocalLimits, RedisLimits } from '../../src/cluster/limits.js';
import { listNodes } from '../../src/cluster/nodes.js';
import { redisPace } from '../../src/cluster/pace.js';
import { maskUrl, type ClusterSettings } from '../../src/cluster/settings.js';
import { ClusterTraffic } from '../../src/cluster/traffic.js';
import { PolicyState } from '../../src/policy/engine.js';
import type { Logger } from '../../src/log.js';
import { redisSkip, startRedis, type RedisServer } from '../helpers/redis.js';

interface Line {
  level: string;
  message: string;
  fields: Record<string, unknown>;
}

function recordingLogger(): { log: Logger; lines: Line[] } {
  const lines: Line[] = [];
  const at =
    (level: string) =>
    (message: string, fields: Record<string, unknown> = {}) =>
      lines.push({ level, message, fields });
  const log = {
    error: at('error'),
    warn: at('warn'),
    info: at('info'),
    debug: at('debug'),
  } as unknown as Logger;
  return { log, lines };
}

const rate = (text: string) => parseRate(text)!;

let counter = 0;
function settings(redis: RedisServer, name = `t${process.pid}-${++counter}`): ClusterSettings {
  const config = parseConfig(
    { cluster: { redis: redis.url, name, timeout: '200ms' } },
    {
      env: {},
      baseDir: '/tmp',
      source: 'test',
    },
  );
  return config.cluster!;
}

async function until(what: string, check: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!check()) {
    if (Date.now() > deadline) assert.fail(`timed out waiting for ${what}`);
    await new Promise((resolve) => setTimeout(resolve, 25));
  }
}

async function connected(name: string, redis: RedisServer) {
  const { log, lines } = recordingLogger();
  const client = new ClusterClient(settings(redis, name), log);
  client.start();
  await until('the client to connect', () => !client.degraded);
  return { client, lines, local: new LocalLimits(new PolicyState()) };
}

describe('cluster config', () => {
  test('a password in the URL is taken out into a Secret and masked wherever the URL is shown', () => {
    const config = parseConfig(
      { cluster: { redis: 'redis://app:hunter2@redis.internal:6380/2' } },
      {
        env: {},
        baseDir: '/tmp',
        source: 'test',
      },
    );
    const cluster = config.cluster!;
    assert.equal(cluster.redis, 'redis://app:***@redis.internal:6380/2');
    assert.equal(cluster.password?.reveal(), 'hunter2');
    assert.equal(String(cluster.password), '***');
    assert.equal(cluster.port, 6380);
    assert.equal(cluster.db, 2);
    assert.equal(cluster.name, 'smarthost');
    assert.equal(cluster.timeout, 100);
    assert.doesNotMatch(JSON.stringify(config), /hunter2/);
  });

  test('a wrong URL is refused without showing its password', () => {
    assert.throws(
      () =>
        parseConfig(
          { cluster: { redis: 'http://app:hunter2@redis.internal' } },
          {
            env: {},
            baseDir: '/tmp',
            source: 'test',
          },
        ),
      (err: Error) => /cluster\.redis/.test(err.message) && !/hunter2/.test(err.message),
    );
    assert.equal(maskUrl('rediss://:s3cret@h:1/0'), 'rediss://:***@h:1/0');
  });

  test('hostile key parts (long, control characters, another key space) become digests', () => {
    assert.equal(keyPart('crm'), 'crm');
    assert.match(keyPart('x'.repeat(500)), /^#[A-Za-z0-9_-]{43}$/);
    assert.match(keyPart('a:rate:b\r\n'), /^#/);
    assert.notEqual(keyPart('a\u0000'), keyPart('a\u0001'));
  });
});

describe('cluster mode on a real Redis', { skip: redisSkip }, () => {
  let redis: RedisServer;
  before(async () => {
    redis = await startRedis();
  });
  after(async () => {
    await redis?.kill();
  });

  test('a source rate is shared by two relays: 5/min is 5 over both, then a time to retry', async () => {
    const name = `rate-${counter++}`;
    const a = await connected(name, redis);
    const b = await connected(name, redis);
    const limitsA = new RedisLimits(a.client, a.local);
    const limitsB = new RedisLimits(b.client, b.local);
    const results = [];
    for (let i = 0; i < 4; i++) {
      results.push(await limitsA.take('message', 'allowlist:floor3', rate('5/min')));
      results.push(await limitsB.take('message', 'allowlist:floor3', rate('5/min')));
    }
    assert.deepEqual(
      results.map((r) => r.ok),
      [true, true, true, true, true, false, false, false],
    );
    const refused = results[5]!;
    assert.ok(!refused.ok && refused.retryInMs > 0 && refused.retryInMs <= 12_000, JSON.stringify(refused));
    // The recipient bucket and another source are buckets of their own.
    assert.ok((await limitsA.take('recipient', 'allowlist:floor3', rate('5/min'))).ok);
    assert.ok((await limitsB.take('message', 'allowlist:other', rate('5/min'))).ok);
    await Promise.all([a.client.stop(), b.client.stop()]);
  });

  test('failed logins over two relays lock out the address, and the username from anywhere', async () => {
    const name = `auth-${counter++}`;
    const a = await connected(name, redis);
    const b = await connected(name, redis);
    const limitsA = new RedisLimits(a.client, a.local);
    const limitsB = new RedisLimits(b.client, b.local);
    const settings = { maxFailures: 3, windowMs: 60_000, lockoutMs: 30_000 };
    assert.deepEqual(await limitsA.authFailed('198.51.100.7', 'crm', settings), {
      address: false,
      user: false,
    });
    assert.deepEqual(await limitsB.authFailed('198.51.100.7', 'crm', settings), {
      address: false,
      user: false,
    });
    assert.deepEqual(await limitsA.lockedFor('198.51.100.7', 'crm'), { address: 0, user: 0 });
    assert.deepEqual(await limitsB.authFailed('198.51.100.7', 'other', settings), {
      address: true,
      user: false,
    });
    const locked = (await limitsA.lockedFor('198.51.100.7')).address;
    assert.ok(locked > 25_000 && locked <= 30_000, String(locked));
    // The username "crm", guessed from other addresses: its third failure locks it.
    assert.deepEqual(await limitsB.lockedFor('203.0.113.9', 'crm'), { address: 0, user: 0 });
    assert.deepEqual(await limitsB.authFailed('203.0.113.9', 'crm', settings), {
      address: false,
      user: true,
    });
    assert.ok((await limitsA.lockedFor('192.0.2.1', 'crm')).user > 25_000);
    assert.equal((await limitsA.lockedFor('192.0.2.1', 'someone-else')).user, 0);
    await Promise.all([a.client.stop(), b.client.stop()]);
  });

  test("an upstream's pace is one GCRA over both relays, and a slowdown one reports slows both", async () => {
    const name = `pace-${counter++}`;
    const a = await connected(name, redis);
    const b = await connected(name, redis);
    const paceA = redisPace(a.client, 'esp');
    const paceB = redisPace(b.client, 'esp');
    const request = { intervalMs: 60_000, burst: 1, factor: 1, publish: false, slowTtlMs: 120_000 };
    assert.deepEqual(await paceA.reserve(request), { wait: 0, factor: 1 });
    const second = await paceB.reserve(request);
    assert.ok(second && second.wait > 55_000 && second.wait <= 60_000, JSON.stringify(second));
    // Relay A is throttled: it publishes its slowdown; B's next answer carries it.
    const other = { ...request, intervalMs: 1 };
    assert.equal(
      (await redisPace(a.client, 'esp2').reserve({ ...other, factor: 4, publish: true }))?.factor,
      4,
    );
    assert.equal((await redisPace(b.client, 'esp2').reserve(other))?.factor, 4);
    // A recovers and says so: the slowdown is gone for all.
    assert.equal((await redisPace(a.client, 'esp2').reserve({ ...other, publish: true }))?.factor, 1);
    assert.equal((await redisPace(b.client, 'esp2').reserve(other))?.factor, 1);
    await Promise.all([a.client.stop(), b.client.stop()]);
  });

  test('traffic counts of two relays add up in one report', async () => {
    const name = `traffic-${counter++}`;
    const a = await connected(name, redis);
    const b = await connected(name, redis);
    const ta = new ClusterTraffic(a.client);
    const tb = new ClusterTraffic(b.client);
    ta.accepted('floor3', 2, 1000);
    tb.accepted('floor3', 1, 500);
    tb.refused('rate_limit', '10.0.0.5', 'floor3');
    ta.refused('not_allowed', '192.0.2.66');
    await Promise.all([ta.flush(), tb.flush()]);
    const report = await ta.report(3_600_000, 10);
    assert.ok(report);
    assert.deepEqual(report.totals, { messages: 2, recipients: 3, bytes: 1500, refused: 2, rateLimited: 1 });
    const floor3 = report.top.messages.find((r) => r.source === 'floor3');
    assert.deepEqual(floor3?.reasons, { rate_limit: 1 });
    assert.ok(report.top.refusals.some((r) => r.source === '192.0.2.66' && r.unknown));
    await Promise.all([a.client.stop(), b.client.stop()]);
  });

  test('heartbeats list the live nodes; a stopped one leaves the list at once', async () => {
    const name = `nodes-${counter++}`;
    const { log } = recordingLogger();
    const one = new Cluster(settings(redis, name), log, { queued: () => 3 });
    const two = new Cluster(settings(redis, name), log, { queued: () => 0 });
    one.start();
    two.start();
    await until('both connected', () => !one.client.degraded && !two.client.degraded);
    await Promise.all([one.heartbeat.beat(), two.heartbeat.beat()]);
    const nodes = await listNodes(one.client);
    assert.deepEqual(nodes?.map((n) => n.id).sort(), [one.client.nodeId, two.client.nodeId].sort());
    assert.equal(nodes?.find((n) => n.id === one.client.nodeId)?.queued, 3);
    await two.stop();
    const status = await one.status();
    assert.deepEqual(
      status.nodes?.map((n) => n.id),
      [one.client.nodeId],
    );
    assert.equal(status.degraded, false);
    await one.stop();
  });
});

describe('cluster mode when Redis goes away', { skip: redisSkip }, () => {
  test('falls back to local limits at once, logs it once, and shares again when Redis is back', async () => {
    const redis = await startRedis();
    try {
      const name = `outage-${counter++}`;
      const a = await connected(name, redis);
      const limits = new RedisLimits(a.client, a.local);
      const fiveMin = rate('5/min');
      for (let i = 0; i < 3; i++) assert.ok((await limits.take('message', 's', fiveMin)).ok);
      await redis.kill();
      // Local limits, which counted along: 2 left of 5, then refused.
      const during = [];
      for (let i = 0; i < 4; i++) during.push((await limits.take('message', 's', fiveMin)).ok);
      assert.deepEqual(during, [true, true, false, false]);
      assert.equal(a.client.degraded, true);
      const degraded = a.lines.filter((l) => l.fields.event === 'cluster_degraded');
      assert.equal(degraded.length, 1, JSON.stringify(a.lines));
      assert.match(String(degraded[0]!.fields.reason), /\S/);
      await redis.start();
      await until('cluster_restored', () => a.lines.some((l) => l.fields.event === 'cluster_restored'));
      assert.equal(a.client.degraded, false);
      // Redis lost its data (nothing saved): a fresh shared bucket, 5 again.
      const back = [];
      for (let i = 0; i < 6; i++) back.push((await limits.take('message', 's', fiveMin)).ok);
      assert.deepEqual(back, [true, true, true, true, true, false]);
      assert.equal(a.lines.filter((l) => l.fields.event === 'cluster_degraded').length, 1);
      await a.client.stop();
    } finally {
      await redis.kill();
    }
  });

  test('a Redis that hangs (no answer) is a timeout, not a wait: local limits answer', async () => {
    const redis = await startRedis();
    try {
      const a = await connected(`hang-${counter++}`, redis);
      const limits = new RedisLimits(a.client, a.local);
      redis.pause();
      const result = await limits.take('message', 's', rate('5/min'));
      assert.equal(result.ok, true);
      assert.equal(a.client.degraded, true);
      assert.match(
        String(a.lines.find((l) => l.fields.event === 'cluster_degraded')?.fields.reason),
        /timed out/i,
      );
      redis.resume();
      await until('cluster_restored', () => a.lines.some((l) => l.fields.event === 'cluster_restored'));
      await a.client.stop();
    } finally {
      redis.resume();
      await redis.kill();
    }
  });
});
