// Logs: JSON lines when stdout is not a terminal, and `log.maskAddresses: true` masks the local
// part of every address in every line (fields named from/to/… and addresses inside any text).
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { rawSmtpSession, sendMail } from '../helpers/client.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { waitUntil } from './relay-common.js';

describe('ops: logs with log.maskAddresses', () => {
  let relay: Relay;

  before(async () => {
    relay = await startRelay({ config: { log: { maskAddresses: true } } });
  });

  after(async () => {
    await relay?.stop();
  });

  test('every line is JSON and no address shows its local part', async () => {
    const sent = await sendMail({
      port: relay.port,
      from: 'jane.scanner@corp.example',
      to: ['alice.private@example.com'],
      subject: 'Invoice for bob.customer@example.org',
    });
    assert.ok(sent.ok, sent.response);
    // A refusal whose reply quotes the address (a source route), logged with that reply.
    const replies = await rawSmtpSession(relay.port, [
      'EHLO client.test',
      'MAIL FROM:<jane.scanner@corp.example>',
      'RCPT TO:<@hop.example:carol.secret@example.net>',
      'QUIT',
    ]);
    assert.match(
      replies[3] ?? '',
      /^553 5\.1\.3 .*carol\.secret@example\.net/,
      'the client itself sees its address',
    );
    await waitUntil('the delivered and refused lines', () => {
      const out = relay.output();
      return out.includes('"event":"delivered"') && out.includes('"reason":"bad_address"');
    });

    const lines = relay
      .output()
      .split('\n')
      .filter((l) => l.trim());
    for (const line of lines) assert.doesNotThrow(() => JSON.parse(line), `not a JSON line: ${line}`);
    const out = relay.output();
    for (const secret of ['jane.scanner@', 'alice.private@', 'carol.secret@']) {
      assert.ok(!out.includes(secret), `${secret} appears in the log:\n${out}`);
    }
    const accepted = lines
      .map((l) => JSON.parse(l) as Record<string, unknown>)
      .find((l) => l.event === 'accepted');
    assert.equal(accepted?.from, 'j***@corp.example');
    assert.match(out, /c\*\*\*@example\.net/, 'an address inside a reply is masked too');
  });
});
