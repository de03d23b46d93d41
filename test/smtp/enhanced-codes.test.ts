// Every reply carries an enhanced status code: smtp-server's own (syntax, sequence, size) get
// the library's, and the relay's own keep exactly the code they name, never a second one.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { rawSmtpSession } from '../helpers/client.js';
import { startRelay, type Relay } from '../helpers/relay.js';

let relay: Relay;

before(async () => {
  relay = await startRelay({
    config: { allowlist: [{ cidr: '127.0.0.1/32', name: 'device' }], limits: { maxMessageSize: '1MB' } },
  });
});

after(async () => {
  await relay?.stop();
});

test("smtp-server's own refusals carry an enhanced status code, and EHLO says so", async () => {
  const replies = await rawSmtpSession(relay.port, [
    'EHLO',
    'EHLO device.test',
    'DATA',
    'NOPE',
    'MAIL FROM:<device@corp.example> SIZE=99999999',
    'QUIT',
  ]);
  // A refusal the library marks "no code" (greeting-time checks, HELO syntax) still gets one.
  assert.match(replies[1] ?? '', /^501 5\.5\.4 /);
  assert.match(replies[2] ?? '', /ENHANCEDSTATUSCODES/);
  assert.match(replies[3] ?? '', /^503 5\.5\.1 /);
  assert.match(replies[4] ?? '', /^500 5\.5\.2 /);
  assert.match(replies[5] ?? '', /^552 5\.3\.4 /);
});

test("the relay's own replies keep their code, written once", async () => {
  const stranger = await rawSmtpSession(
    relay.port,
    ['EHLO stranger.test', 'MAIL FROM:<x@corp.example>', 'QUIT'],
    {
      localAddress: '127.0.0.2',
    },
  );
  assert.match(stranger[2] ?? '', /^550 5\.7\.1 Client 127\.0\.0\.2 /);
  const device = await rawSmtpSession(relay.port, [
    'EHLO device.test',
    'MAIL FROM:<device@corp.example>',
    'RCPT TO:<someone@example.com>',
    'DATA',
    'Subject: codes\r\n\r\nbody\r\n.',
    'QUIT',
  ]);
  assert.match(device[2] ?? '', /^250 2\.1\.0 /);
  assert.match(device[3] ?? '', /^250 2\.1\.5 /);
  assert.match(device[5] ?? '', /^250 2\.0\.0 Ok: queued as \S+$/);
  for (const reply of [...stranger, ...device]) {
    assert.doesNotMatch(reply, /^\d{3}[ -]\d\.\d+\.\d+ \d\.\d+\.\d+/, `doubled code in ${reply}`);
  }
});
