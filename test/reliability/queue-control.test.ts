// Hostile input to the queue commands' filters and selections, straight over the control
// socket of a real relay (the CLI checks them too, but the socket is what the relay trusts):
// oversized and star-heavy patterns, wrong types, regex syntax. Each is refused or matched
// literally and quickly; the relay stays up and its queue untouched.
import assert from 'node:assert/strict';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { controlRequest, ControlError } from '../../src/control/client.js';
import { sendMail } from '../helpers/client.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { upstreamFor } from './common.js';

let esp: Esp;
let relay: Relay;
let socket: string;

before(async () => {
  esp = await startEsp();
  await esp.stop(); // the messages stay queued
  relay = await startRelay({ config: { upstream: upstreamFor(esp), queue: { retry: ['1h'] } } });
  socket = path.join(relay.spoolDir, 'control.sock');
  const long = `${'a'.repeat(200)}@example.com`;
  for (let i = 0; i < 20; i++) {
    const sent = await sendMail({ port: relay.port, from: 'app@corp.example', to: [long], subject: `m${i}` });
    assert.ok(sent.ok, sent.response);
  }
});

after(async () => {
  await relay?.kill();
  await esp?.close();
});

const refused = (err: unknown) => err instanceof ControlError && err.code === 'refused';

test(
  'hostile filters are refused or matched literally; the relay stays up',
  { timeout: 60_000 },
  async () => {
    for (const filter of [
      { to: 'x'.repeat(10_000) },
      { from: 42 },
      { to: ['*'] },
      { source: { $regex: '.*' } },
      { state: { held: true } },
      { state: ['held', '__proto__'] },
      { olderThan: 'forever' },
      { olderThan: -5 },
      { olderThan: Number.MAX_VALUE * 10 },
      { regex: '(a+)+$' },
      'all',
      [1, 2, 3],
    ]) {
      await assert.rejects(
        controlRequest(socket, 'queue.list', { filter }),
        refused,
        JSON.stringify(filter).slice(0, 80),
      );
    }
    for (const args of [{ ids: 'ALL' }, { ids: [{}] }, { ids: ['../../etc/passwd'] }, { all: 'yes' }, {}]) {
      await assert.rejects(controlRequest(socket, 'queue.delete', args), refused, JSON.stringify(args));
    }
    await assert.rejects(
      controlRequest(socket, 'queue.match', { action: 'constructor', all: true }),
      refused,
    );

    // Star-heavy patterns of the greatest length against long addresses: answered, no match.
    const stars = `${'*a'.repeat(127)}b`;
    assert.equal(stars.length, 255);
    assert.deepEqual(await controlRequest(socket, 'queue.list', { filter: { to: stars } }), []);
    assert.deepEqual(
      await controlRequest(socket, 'queue.match', { action: 'delete', filter: { to: stars } }),
      [],
    );
    // Regex syntax is text: nothing matches by accident.
    assert.deepEqual(await controlRequest(socket, 'queue.list', { filter: { to: '.*' } }), []);
    const all = (await controlRequest(socket, 'queue.list', {
      filter: { to: '*@EXAMPLE.COM' },
    })) as unknown[];
    assert.equal(all.length, 20);

    assert.ok(relay.running, 'the relay survived');
    assert.doesNotMatch(relay.output(), /uncaught|unhandled|FATAL/i);
  },
);
