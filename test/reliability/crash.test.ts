// SIGKILL at random moments under load, ten rounds: every message the relay answered 250 to is
// delivered to the ESP, whole, once the relay is back (accepted ⊆ delivered, every round).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { startEsp, type Esp } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import {
  checkSpoolConsistent,
  isWhole,
  sendTagged,
  sleep,
  token,
  tokenOf,
  upstreamFor,
  waitUntil,
} from './common.js';

const ROUNDS = 10;
const SENDERS = 8;

let esp: Esp | undefined;
let relay: Relay | undefined;
after(async () => {
  await relay?.kill();
  await esp?.close();
});

test(
  'SIGKILL under load, 10 rounds: every accepted message is delivered whole',
  { timeout: 240_000 },
  async (t) => {
    esp = await startEsp();
    // Slow the ESP down a little so deliveries are in flight when the relay dies.
    esp.onData = async () => {
      await sleep(Math.random() * 20);
      return undefined;
    };
    relay = await startRelay({
      config: {
        allowlist: [{ cidr: '127.0.0.0/8', name: 'lan' }],
        upstream: upstreamFor(esp),
        queue: { retry: ['1s'] },
        log: { level: 'warn' },
        shutdown: { grace: '1s' },
      },
    });
    const r = relay;
    const e = esp;
    const delivered = () => new Set(e.messages.filter(isWhole).map(tokenOf));

    const acceptedAll = new Set<string>();
    for (let round = 1; round <= ROUNDS; round++) {
      const accepted: string[] = [];
      let running = true;
      const senders = Array.from({ length: SENDERS }, async () => {
        while (running) {
          const tok = token(`r${round}`);
          const result = await sendTagged(r.port, tok, { timeoutMs: 5000 });
          if (result.ok) accepted.push(tok);
          else if (!r.running) break;
        }
      });
      const killAfter = 150 + Math.floor(Math.random() * 1200);
      await sleep(killAfter);
      await r.kill('SIGKILL');
      running = false;
      await Promise.all(senders);
      for (const tok of accepted) acceptedAll.add(tok);

      // Half-written files may be left behind; what is queued must be whole after the restart's sweep.
      await r.restart();
      await checkSpoolConsistent(r.spoolDir);
      await waitUntil(
        () =>
          `round ${round}: ${accepted.filter((tok) => !delivered().has(tok)).length} accepted messages not delivered`,
        () => accepted.every((tok) => delivered().has(tok)),
        60_000,
      );
      // What the kill cut short during a reception (an empty .json) is swept, not left forever.
      await waitUntil(
        `round ${round}: the debris of interrupted receptions swept`,
        async () => (await checkSpoolConsistent(r.spoolDir)).debris === 0,
      );
      t.diagnostic(
        `round ${round}: killed after ${killAfter} ms, ${accepted.length} accepted, all delivered`,
      );
    }

    assert.ok(acceptedAll.size >= ROUNDS, `the load reached the relay (only ${acceptedAll.size} accepted)`);
    const got = delivered();
    const lost = [...acceptedAll].filter((tok) => !got.has(tok));
    assert.deepEqual(lost, [], 'accepted but never delivered');
    const partial = e.messages.filter((m) => !isWhole(m));
    assert.equal(partial.length, 0, 'the ESP received a truncated message');
    const copies = e.messages.length - got.size;
    t.diagnostic(
      `${acceptedAll.size} accepted over ${ROUNDS} rounds; ${copies} delivered twice (at-least-once)`,
    );
  },
);
