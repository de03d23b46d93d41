// Memory stays bounded whatever the number of client addresses (issue 3, acceptance 4): 10,000
// connections, each from its own loopback address, each hitting the source's rate limit, leave
// the relay's resident memory roughly where it was, and the relay serves a device afterwards.
// Per-address state (connection counts, failed logins) lives in capped LRU caches and is let go
// when a connection closes; rate buckets are per source.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { rawSmtpSession } from '../helpers/client.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { procMemory } from '../e2e/relay-common.js';

const ADDRESSES = Number(process.env.SMARTHOST_MANY_ADDRESSES ?? 10_000);
const CONCURRENCY = 50;
const MB = 1024 * 1024;

let relay: Relay;

before(async () => {
  relay = await startRelay({
    config: {
      allowlist: [{ cidr: '127.0.0.0/8', name: 'lan', rateLimit: '100/hour' }],
      limits: { maxConnections: 1000, maxConnectionsPerIp: 5 },
      log: { level: 'warn' },
    },
    // A small old generation: V8 then collects the garbage of 10,000 sessions as it goes rather
    // than when it pleases, so RSS measures what is kept (it grew 50-55 MB by GC timing alone
    // with the default), and a real leak ends the relay, which the last check sees.
    env: { NODE_OPTIONS: '--max-old-space-size=96' },
  });
});

after(async () => {
  await relay?.kill();
});

/** 127.10.x.y, a distinct address for each n (n < 65,000; y from 1 to 250). */
function address(n: number): string {
  return `127.10.${Math.floor(n / 250)}.${(n % 250) + 1}`;
}

async function probe(n: number): Promise<string> {
  const replies = await rawSmtpSession(
    relay.port,
    ['EHLO device.test', 'MAIL FROM:<device@corp.example>', 'QUIT'],
    {
      localAddress: address(n),
    },
  );
  return replies[2] ?? '';
}

test(`${ADDRESSES} distinct client addresses hitting the rate limiter leave memory bounded`, async (t) => {
  const counts = new Map<string, number>();
  let next = 0;
  let rssAfterWarmUp: number | undefined;
  const worker = async () => {
    for (let n = next++; n < ADDRESSES; n = next++) {
      const code = (await probe(n)).slice(0, 9);
      counts.set(code, (counts.get(code) ?? 0) + 1);
      if (n === 1000) rssAfterWarmUp = await procMemory(relay.process.pid!, 'VmRSS');
    }
  };
  await Promise.all(Array.from({ length: CONCURRENCY }, worker));

  const summary = JSON.stringify(Object.fromEntries(counts));
  assert.equal(
    [...counts.values()].reduce((a, b) => a + b, 0),
    ADDRESSES,
  );
  // 100/hour: a burst of 100, then one every 36 s (a slow machine's run may see a few more).
  assert.ok((counts.get('450 4.7.1') ?? 0) >= ADDRESSES - 120, `most were rate-limited: ${summary}`);
  assert.ok((counts.get('250 2.1.0') ?? 0) <= 120, `the burst allowance is all that got through: ${summary}`);

  const rss = await procMemory(relay.process.pid!, 'VmRSS');
  assert.ok(rssAfterWarmUp && rss, 'resident memory readable from /proc');
  t.diagnostic(
    `replies: ${summary}; RSS ${(rssAfterWarmUp / MB).toFixed(1)} MB → ${(rss / MB).toFixed(1)} MB`,
  );
  assert.ok(
    rss - rssAfterWarmUp < 24 * MB,
    `RSS grew by ${((rss - rssAfterWarmUp) / MB).toFixed(1)} MB over ${ADDRESSES - 1000} more addresses`,
  );

  const device = await rawSmtpSession(relay.port, ['EHLO device.test', 'QUIT']);
  assert.match(device[1] ?? '', /^250/, 'still serving');
});
