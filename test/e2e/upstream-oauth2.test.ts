// Acceptance 2 of issue 6: an XOAUTH2-only ESP stand-in and a token endpoint on loopback
// (Microsoft 365 client credentials, the secret read from clientSecretFile):
//  - delivery works, and the token is fetched once for many messages;
//  - a token the ESP refuses is replaced once and the message goes through;
//  - a token that expires is replaced before it is used (no refusal on the way);
//  - when no good token can be had, the message waits (a temporary failure, no bounce), then
//    goes out once the endpoint works again;
//  - neither the client secret nor a token ever appears in the relay's output.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { sendMail } from '../helpers/client.js';
import { startEsp, type Esp } from '../helpers/esp.js';
import { startTokenEndpoint, xoauth2EspOptions, type TokenEndpoint } from '../helpers/oauth.js';
import { makeTempDir, startRelay, type Relay } from '../helpers/relay.js';
import { queuedIds, sleep, waitUntil } from './relay-common.js';
import { events } from './upstream-common.js';

const USER = 'relay@corp.example';
const CLIENT_ID = '0d1e2f3a-app-id';
const CLIENT_SECRET = 'Zq8~client-secret-never-logged';

describe('relay: OAuth2 (XOAUTH2) to the upstream', () => {
  let tokens: TokenEndpoint;
  let esp: Esp;
  let relay: Relay;

  before(async () => {
    tokens = await startTokenEndpoint({ clientId: CLIENT_ID, clientSecret: CLIENT_SECRET, expiresIn: 3600 });
    esp = await startEsp(xoauth2EspOptions(tokens, USER));
    const dir = await makeTempDir('smarthost-oauth');
    await fs.writeFile(path.join(dir, 'client-secret'), `${CLIENT_SECRET}\n`, { mode: 0o600 });
    relay = await startRelay({
      dir,
      config: {
        upstream: {
          name: 'm365',
          host: '127.0.0.1',
          port: esp.port,
          tls: 'starttls',
          ca: esp.caFile,
          timeout: '10s',
          backoff: { initial: '1s', max: '1s' },
          auth: {
            type: 'oauth2',
            provider: 'microsoft',
            tenant: 'corp.example',
            clientId: CLIENT_ID,
            clientSecretFile: 'client-secret',
            user: USER,
            tokenUrl: tokens.url,
          },
        },
        queue: { retry: ['1s'] },
      },
    });
  });

  after(async () => {
    await relay?.stop();
    await esp?.close();
    await tokens?.close();
  });

  const send = async (subject: string) => {
    const sent = await sendMail({
      port: relay.port,
      from: 'scanner@corp.example',
      to: ['ops@example.com'],
      subject,
    });
    assert.ok(sent.ok, `${subject} refused: ${sent.response}`);
    return sent.queueId!;
  };

  /** Drops the ESP's connections, so the next message opens a new one and logs in again. */
  const dropConnections = async () => {
    await esp.stop();
    await esp.start();
  };

  test('delivery works, with one token for many messages', async () => {
    await Promise.all(Array.from({ length: 12 }, (_, i) => send(`oauth-${i}`)));
    await esp.waitFor(12);
    assert.ok(esp.messages.every((m) => m.user === USER && m.secure));
    assert.equal(tokens.requests.length, 1, 'one token for all connections and messages');
    assert.deepEqual(tokens.requests[0]!.form, {
      grant_type: 'client_credentials',
      client_id: CLIENT_ID,
      client_secret: CLIENT_SECRET,
      scope: 'https://outlook.office365.com/.default',
    });
    assert.equal(esp.authFailures, 0);
  });

  test('a refused token is replaced once and the message goes through', async () => {
    tokens.revokeAll();
    tokens.expiresIn = 2; // the replacement lives 2 s (used by the next test)
    await dropConnections();
    await send('after-revoke');
    await esp.waitFor(13);
    assert.equal(tokens.requests.length, 2);
    assert.equal(esp.authFailures, 1, 'the old token was refused once, the new one accepted');
  });

  test('an expiring token is replaced before it is used', async () => {
    await sleep(2200); // the 2 s token has expired (and its refresh point, 1.6 s, has passed)
    await dropConnections();
    await send('after-expiry');
    await esp.waitFor(14);
    assert.equal(tokens.requests.length, 3, 'a new token was fetched');
    assert.equal(esp.authFailures, 1, 'no login with the expired token');
  });

  test('no usable token: the message waits (no bounce), then goes out', async () => {
    tokens.expiresIn = 3600;
    tokens.revokeAll();
    tokens.failWith = { status: 401, error: 'invalid_client' };
    await dropConnections();
    const id = await send('endpoint-refuses');
    await waitUntil('a deferral', () => events(relay, 'deferred', id).length > 0);
    const deferred = events(relay, 'deferred', id)[0]!;
    assert.match(String(deferred.reply), /XOAUTH2|invalid_client/);
    assert.ok((await queuedIds(relay.spoolDir)).includes(id), 'still queued');
    assert.equal(events(relay, 'bounced', id).length, 0);

    tokens.failWith = undefined;
    await esp.waitFor(15);
    assert.equal(esp.messages.at(-1)!.user, USER);
  });

  test('neither the client secret nor a token appears in the output', () => {
    const output = relay.output();
    assert.ok(!output.includes(CLIENT_SECRET), 'client secret in the output');
    for (const token of tokens.issued) assert.ok(!output.includes(token), `token ${token} in the output`);
    assert.ok(!output.includes('auth=Bearer'), 'an XOAUTH2 response in the output');
  });
});
