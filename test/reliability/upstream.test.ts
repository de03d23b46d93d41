// The upstream ESP misbehaving: gone for a while, flapping, answering 421/451/550 at random.
// Whatever it does, every accepted message ends up delivered (temporary failures) or bounced
// and kept as a dead letter (permanent ones); none is lost, none delivered despite a 550.
import { test, after, before } from 'node:test';
import assert from 'node:assert/strict';
import path from 'node:path';
import { promises as fs } from 'node:fs';
import { startEsp, type Esp } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { filesIn, isWhole, sendTagged, sleep, token, tokenOf, upstreamFor, waitUntil } from './common.js';

let esp: Esp;
let relay: Relay;

before(async () => {
  esp = await startEsp();
  relay = await startRelay({
    config: {
      allowlist: [{ cidr: '127.0.0.0/8', name: 'lan' }],
      // A high rateLimit, so a 421's slow-down (half the pace for 5 minutes) still leaves room,
      // and a short back-off for an upstream marked down: the test waits seconds, not minutes.
      upstream: { ...upstreamFor(esp), rateLimit: '6000/min', backoff: { initial: '1s', max: '2s' } },
      queue: { retry: ['1s'] },
      bounces: { to: 'postmaster@corp.test' },
      log: { level: 'info' },
    },
  });
});

after(async () => {
  await relay?.kill();
  await esp?.close();
});

function deliveredTokens(): Set<string | undefined> {
  return new Set(esp.messages.filter((m) => m.from !== '' && isWhole(m)).map(tokenOf));
}

async function sendAll(tokens: string[]): Promise<void> {
  for (const tok of tokens) {
    const result = await sendTagged(relay.port, tok);
    assert.ok(result.ok, `the relay accepts ${tok} whatever the upstream does: ${result.response}`);
  }
}

test(
  'upstream outage: messages wait in the queue and go out once it is back',
  { timeout: 90_000 },
  async () => {
    esp.reset();
    await esp.stop();
    const since = relay.output().length;
    const tokens = Array.from({ length: 10 }, () => token('outage'));
    await sendAll(tokens);
    await relay.waitForOutput(/deferred/, 30_000, { since });
    assert.equal(esp.messages.length, 0);
    await esp.start();
    await waitUntil(
      () => `${tokens.filter((tok) => !deliveredTokens().has(tok)).length} of 10 still undelivered`,
      () => tokens.every((tok) => deliveredTokens().has(tok)),
      60_000,
    );
  },
);

test('flapping upstream: all messages delivered in the end', { timeout: 120_000 }, async () => {
  esp.reset();
  let flapping = true;
  const flapper = (async () => {
    while (flapping) {
      await sleep(150 + Math.random() * 300);
      if (esp.listening) await esp.stop();
      else await esp.start();
    }
    if (!esp.listening) await esp.start();
  })();
  const tokens = Array.from({ length: 30 }, () => token('flap'));
  await sendAll(tokens);
  await sleep(3000);
  flapping = false;
  await flapper;
  await waitUntil(
    () => `${tokens.filter((tok) => !deliveredTokens().has(tok)).length} of 30 still undelivered`,
    () => tokens.every((tok) => deliveredTokens().has(tok)),
    60_000,
  );
});

test(
  'upstream answering 421/451/550 at random: 4xx retried until delivered, 5xx bounced, never delivered',
  { timeout: 120_000 },
  async () => {
    esp.reset();
    const tries = new Map<string, number>();
    const transient = [
      { code: 421, message: '4.3.2 Service shutting down, try later' },
      { code: 451, message: '4.3.0 Local error in processing' },
      { code: 452, message: '4.3.1 Insufficient system storage' },
    ];
    esp.onRcpt = () => (Math.random() < 0.2 ? transient[1] : undefined);
    esp.onData = (message) => {
      if (message.from === '') return undefined; // bounces go through
      const tok = tokenOf(message) ?? '';
      if (tok.startsWith('perm'))
        return { code: 550, message: '5.7.1 Sender not allowed to send as this address' };
      const n = (tries.get(tok) ?? 0) + 1;
      tries.set(tok, n);
      if (n <= 3 && Math.random() < 0.6) return transient[Math.floor(Math.random() * transient.length)];
      return undefined;
    };
    try {
      const temp = Array.from({ length: 20 }, () => token('temp'));
      const perm = Array.from({ length: 5 }, () => token('perm'));
      await sendAll([...temp, ...perm].sort(() => Math.random() - 0.5));
      await waitUntil(
        () => `${temp.filter((tok) => !deliveredTokens().has(tok)).length} of 20 still undelivered`,
        () => temp.every((tok) => deliveredTokens().has(tok)),
        90_000,
      );
      // Permanent failures: dead letters with the reply, and a DSN for each (to bounces.to or the sender).
      const failedDir = path.join(relay.spoolDir, 'failed');
      const deadLetters = await waitUntil(
        'a dead letter for every 550',
        async () => {
          const found: string[] = [];
          for (const name of (await filesIn(failedDir)).filter((n) => n.endsWith('.eml'))) {
            const text = await fs.readFile(path.join(failedDir, name), 'latin1');
            const tok = /^Subject: reliability (\S+)/m.exec(text)?.[1];
            if (tok) found.push(tok);
          }
          return perm.every((tok) => found.includes(tok)) ? found : undefined;
        },
        60_000,
      );
      assert.deepEqual(
        deadLetters.filter((tok) => !perm.includes(tok)),
        [],
        'only the 550s are dead letters',
      );
      const delivered = deliveredTokens();
      assert.deepEqual(
        perm.filter((tok) => delivered.has(tok)),
        [],
        'a message refused with 550 was delivered',
      );
      await waitUntil('a DSN for every 550', () =>
        perm.every((tok) =>
          esp.messages.some((m) => m.from === '' && m.raw.toString('latin1').includes(tok)),
        ),
      );
    } finally {
      esp.onRcpt = undefined;
      esp.onData = undefined;
    }
  },
);
