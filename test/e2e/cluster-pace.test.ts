// Cluster mode: two relays sending to one ESP limited to `rateLimit: 4/s` (the 20/min,
// faster, so it runs in seconds) share one pace through Redis: 24 messages queued between them
// all arrive, and the ESP stand-in never sees more than the quota (plus one for the network's
// jitter) in any second by its own receive times. Each relay alone would send 4/s: 8 together.
//
// The Redis timeout is long on purpose: a command that times out leaves a relay on its own pace
// (degraded, as it should be), and on a loaded test machine 200 ms was sometimes not enough;
// this test is about the shared pace, cluster.test.ts about losing Redis.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sendMail } from '../helpers/client.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { redisSkip, startRedis, type RedisServer } from '../helpers/redis.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { upstreamFor } from './relay-common.js';
import { maxInWindow } from './upstream-common.js';

const EACH = 12;

describe('cluster mode: one upstream pace over two relays', { skip: redisSkip }, () => {
  let redis: RedisServer;
  let esp: Esp;
  let relays: Relay[] = [];

  before(async () => {
    redis = await startRedis();
    esp = await startEsp();
    const config = {
      cluster: { redis: redis.url, name: 'pace-e2e', timeout: '2s' },
      upstream: { ...upstreamFor(esp), rateLimit: '4/s', maxConnections: 5 },
      queue: { concurrency: 50 },
    };
    relays = await Promise.all([startRelay({ config }), startRelay({ config })]);
    await Promise.all(relays.map((r) => r.waitForOutput(/cluster_connected/)));
  });

  after(async () => {
    await Promise.all(relays.map((r) => r.stop()));
    await esp?.close();
    await redis?.kill();
  });

  test(`${2 * EACH} messages over two relays at 4/s: all arrive, never more than the quota in a second`, async () => {
    await Promise.all(
      relays.map(async (relay, r) => {
        for (let i = 0; i < EACH; i++) {
          const sent = await sendMail({
            port: relay.port,
            from: 'monitor@corp.example',
            to: ['ops@example.com'],
            subject: `paced-${r}-${i}`,
          });
          assert.ok(sent.ok, sent.response);
        }
      }),
    );
    await esp.waitFor(2 * EACH, 60_000);
    const times = esp.messages.map((m) => m.receivedAt);
    const busiest = maxInWindow(times, 1000);
    const degraded = relays.filter((r) => r.output().includes('cluster_degraded')).length;
    assert.ok(
      busiest <= 5,
      `the ESP saw ${busiest} messages within one second (quota 4/s); ${degraded} relay(s) lost Redis meanwhile`,
    );
    // Both relays sent: the pace was shared, not one relay doing all the work.
    for (let r = 0; r < 2; r++)
      assert.ok(
        esp.messages.some((m) => m.raw.toString().includes(`paced-${r}-`)),
        `relay ${r} sent nothing`,
      );
  });
});
