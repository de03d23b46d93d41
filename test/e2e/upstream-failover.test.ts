// Acceptance 1 and 4 of issue 6, through the real relay and three ESP stand-ins:
//  1. two upstreams, the first not listening: messages arrive at the second; when the first
//     comes back it is used again (the back-off is shortened to 1 s, doubling to 2 s);
//  4. mail from a domain routed to its own upstream never leaves through another, not even
//     while its own is down: it waits in the queue, then goes out through its own.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { sendMail } from '../helpers/client.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { header, queuedIds, sleep, upstreamFor, waitUntil } from './relay-common.js';
import { events } from './upstream-common.js';

describe('relay: several upstreams, failover and routing by sender domain', () => {
  let primary: Esp;
  let secondary: Esp;
  let brand: Esp;
  let relay: Relay;

  before(async () => {
    [primary, secondary, brand] = await Promise.all([startEsp(), startEsp(), startEsp()]);
    // The first upstream and the brand's own upstream are down from the start.
    await Promise.all([primary.stop(), brand.stop()]);
    const fast = { backoff: { initial: '1s', max: '2s' } };
    relay = await startRelay({
      config: {
        upstreams: [
          { name: 'primary', ...upstreamFor(primary), ...fast },
          { name: 'secondary', ...upstreamFor(secondary), ...fast },
          { name: 'brand', ...upstreamFor(brand), ...fast, senderDomains: ['brand.example'] },
        ],
        queue: { retry: ['1s'] },
      },
    });
  });

  after(async () => {
    await relay?.stop();
    await Promise.all([primary?.close(), secondary?.close(), brand?.close()]);
  });

  const send = async (from: string, subject: string) => {
    const sent = await sendMail({ port: relay.port, from, to: ['ops@example.com'], subject });
    assert.ok(sent.ok, `${subject} refused: ${sent.response}`);
    return sent.queueId!;
  };

  test('the first upstream down: mail goes to the second; once back, the first is used again', async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push(await send('scanner@corp.example', `while-down-${i}`));
    await secondary.waitFor(5);
    assert.equal(primary.messages.length, 0);
    // The logs say which upstream delivered each message.
    for (const id of ids) {
      await waitUntil(`the delivered line of ${id}`, () => events(relay, 'delivered', id).length > 0);
      assert.equal(events(relay, 'delivered', id)[0]!.upstream, 'secondary');
    }
    assert.ok(events(relay, 'upstream_down').some((l) => l.upstream === 'primary'));

    await primary.start();
    // Within its back-off (at most 2 s) the primary is tried again and takes the mail.
    let n = 0;
    await waitUntil(
      'a message delivered by the primary again',
      async () => {
        await send('scanner@corp.example', `probe-${n++}`);
        await sleep(200);
        return primary.messages.length > 0;
      },
      20_000,
      0,
    );
    const back: string[] = [];
    for (let i = 0; i < 5; i++) back.push(await send('scanner@corp.example', `after-${i}`));
    await primary.waitFor(1 + 5);
    for (const id of back) {
      await waitUntil(`the delivered line of ${id}`, () => events(relay, 'delivered', id).length > 0);
      assert.equal(events(relay, 'delivered', id)[0]!.upstream, 'primary');
    }
    assert.ok(
      !secondary.messages.some((m) => header(m.raw, 'subject')?.startsWith('after-')),
      'nothing more through the second once the first is back',
    );
    assert.ok(events(relay, 'upstream_up').some((l) => l.upstream === 'primary'));
  });

  test('mail from a routed domain waits for its own upstream, never another', async () => {
    const routed = await send('printer@brand.example', 'routed-1');
    const other = await send('printer@corp.example', 'general-1');
    // The routed message was tried (its upstream is down) and is still queued.
    await waitUntil('a deferral of the routed message', () => events(relay, 'deferred', routed).length > 0);
    await waitUntil('the general message delivered', () => events(relay, 'delivered', other).length > 0);
    assert.ok((await queuedIds(relay.spoolDir)).includes(routed), 'the routed message waits in the queue');
    assert.equal(events(relay, 'deferred', routed)[0]!.upstream, 'brand');

    await brand.start();
    await brand.waitFor(1);
    assert.equal(header(brand.messages[0]!.raw, 'subject'), 'routed-1');
    assert.equal(brand.messages[0]!.from, 'printer@brand.example');
    for (const esp of [primary, secondary]) {
      assert.ok(
        !esp.messages.some((m) => m.from.endsWith('@brand.example')),
        'no brand.example mail through a general upstream',
      );
    }
    assert.ok(!brand.messages.some((m) => m.from.endsWith('@corp.example')), 'and no other mail through it');
  });
});
