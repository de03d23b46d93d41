// The OAuth2 token cache and token client (src/upstream/oauth.ts) with an injected clock and
// fetch: one fetch for many logins, refresh before expiry, a refused token replaced once, and
// the request each grant makes (Microsoft client credentials, Google service account JWT and
// refresh token). Secrets never appear in errors.
import assert from 'node:assert/strict';
import { createVerify, generateKeyPairSync } from 'node:crypto';
import { describe, test } from 'node:test';
import { MICROSOFT_SCOPE, TokenCache, tokenFetcher, type AccessToken } from '../../src/upstream/oauth.js';
import type { OAuth2Settings } from '../../src/upstream/oauth-config.js';
import { Secret } from '../../src/config/secret.js';
import { flush } from './upstream-fake-clock.js';

/** A fetcher handing out token-1, token-2, … that each live `lifetimeMs`. */
function countingFetcher(lifetimeMs: number) {
  const state = { calls: 0, fail: false, gate: undefined as Promise<void> | undefined };
  const fetcher = async (): Promise<AccessToken> => {
    state.calls++;
    const n = state.calls;
    if (state.gate) await state.gate;
    if (state.fail) throw new Error('endpoint down');
    return { accessToken: `token-${n}`, expiresInMs: lifetimeMs };
  };
  return { state, fetcher };
}

describe('token cache', () => {
  test('one fetch for many logins, concurrent ones included', async () => {
    let t = 0;
    const { state, fetcher } = countingFetcher(3_600_000);
    const cache = new TokenCache(fetcher, { now: () => t });
    let release!: () => void;
    state.gate = new Promise((resolve) => (release = resolve));
    const first = Array.from({ length: 10 }, () => cache.get());
    await flush();
    release();
    assert.deepEqual(new Set(await Promise.all(first)), new Set(['token-1']));
    t += 30 * 60_000;
    assert.equal(await cache.get(), 'token-1');
    assert.equal(state.calls, 1);
  });

  test('refreshed before it expires: 5 minutes early, or a fifth of a short lifetime', async () => {
    let t = 0;
    const long = countingFetcher(3_600_000);
    const cache = new TokenCache(long.fetcher, { now: () => t });
    assert.equal(await cache.get(), 'token-1');
    t = 3_600_000 - 5 * 60_000 - 1;
    assert.equal(await cache.get(), 'token-1');
    t += 1;
    assert.equal(await cache.get(), 'token-2', 'a new token five minutes before expiry');
    assert.equal(long.state.calls, 2);

    let u = 0;
    const short = countingFetcher(10_000);
    const quick = new TokenCache(short.fetcher, { now: () => u });
    assert.equal(await quick.get(), 'token-1');
    u = 7_999;
    assert.equal(await quick.get(), 'token-1');
    u = 8_000;
    assert.equal(await quick.get(), 'token-2', 'refreshed at 80 % of a 10 s lifetime');
  });

  test('a refused token is replaced once, even when several connections report it', async () => {
    const { state, fetcher } = countingFetcher(3_600_000);
    const cache = new TokenCache(fetcher, { now: () => 0 });
    const token = await cache.get();
    const replaced = await Promise.all([cache.get(token), cache.get(token), cache.get(token)]);
    assert.deepEqual(replaced, ['token-2', 'token-2', 'token-2']);
    assert.equal(await cache.get(token), 'token-2', 'a late report of the old token changes nothing');
    assert.equal(state.calls, 2);
  });

  test('endpoint down: the old token is used while it is still valid, then the error shows', async () => {
    let t = 0;
    const { state, fetcher } = countingFetcher(600_000);
    const cache = new TokenCache(fetcher, { now: () => t });
    assert.equal(await cache.get(), 'token-1');
    state.fail = true;
    t = 590_000; // past the refresh point, not yet expired
    assert.equal(await cache.get(), 'token-1');
    t = 600_000;
    await assert.rejects(cache.get(), /endpoint down/);
    state.fail = false;
    assert.equal(await cache.get(), 'token-4');
  });
});

interface Captured {
  url: string;
  form: URLSearchParams;
}

function fakeFetch(reply: { status: number; body: unknown }, captured: Captured[]): typeof fetch {
  return (async (url: string | URL, init?: RequestInit) => {
    captured.push({ url: String(url), form: new URLSearchParams(String(init?.body)) });
    return new Response(JSON.stringify(reply.body), {
      status: reply.status,
      headers: { 'content-type': 'application/json' },
    });
  }) as typeof fetch;
}

describe('token client', () => {
  const microsoft: OAuth2Settings = {
    type: 'oauth2',
    provider: 'microsoft',
    user: 'relay@corp.example',
    tenant: 'corp.example',
    clientId: 'app-id',
    clientSecret: new Secret('very-secret-value'),
  };

  test('Microsoft 365: client credentials at the tenant endpoint with the Exchange scope', async () => {
    const captured: Captured[] = [];
    const fetchToken = tokenFetcher(microsoft, {
      fetch: fakeFetch({ status: 200, body: { access_token: 'abc', expires_in: 3599 } }, captured),
    });
    assert.deepEqual(await fetchToken(), { accessToken: 'abc', expiresInMs: 3_599_000 });
    assert.equal(captured[0]!.url, 'https://login.microsoftonline.com/corp.example/oauth2/v2.0/token');
    assert.deepEqual(Object.fromEntries(captured[0]!.form), {
      grant_type: 'client_credentials',
      client_id: 'app-id',
      client_secret: 'very-secret-value',
      scope: MICROSOFT_SCOPE,
    });
  });

  test('a refusal names the endpoint and the OAuth error, never the secret', async () => {
    const fetchToken = tokenFetcher(microsoft, {
      fetch: fakeFetch(
        {
          status: 401,
          body: { error: 'invalid_client', error_description: 'AADSTS7000215: Invalid client secret.' },
        },
        [],
      ),
    });
    await assert.rejects(fetchToken(), (err: Error) => {
      assert.match(err.message, /HTTP 401 invalid_client: AADSTS7000215/);
      assert.match(err.message, /login\.microsoftonline\.com/);
      assert.doesNotMatch(err.message, /very-secret-value/);
      return true;
    });
  });

  test('Google refresh token', async () => {
    const captured: Captured[] = [];
    const fetchToken = tokenFetcher(
      {
        type: 'oauth2',
        provider: 'google',
        user: 'relay@corp.example',
        clientId: 'cid',
        clientSecret: new Secret('csecret'),
        refreshToken: new Secret('rtoken'),
      },
      { fetch: fakeFetch({ status: 200, body: { access_token: 'g', expires_in: 3599 } }, captured) },
    );
    await fetchToken();
    assert.equal(captured[0]!.url, 'https://oauth2.googleapis.com/token');
    assert.deepEqual(Object.fromEntries(captured[0]!.form), {
      grant_type: 'refresh_token',
      client_id: 'cid',
      client_secret: 'csecret',
      refresh_token: 'rtoken',
    });
  });

  test('Google service account: a JWT signed with its key, for the user, scope mail.google.com', async () => {
    const { privateKey, publicKey } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    const captured: Captured[] = [];
    const now = 1_700_000_000_000;
    const fetchToken = tokenFetcher(
      {
        type: 'oauth2',
        provider: 'google',
        user: 'relay@corp.example',
        serviceAccount: {
          clientEmail: 'sender@project.iam.gserviceaccount.com',
          privateKey: new Secret(privateKey.export({ type: 'pkcs8', format: 'pem' }).toString()),
        },
        tokenUrl: 'http://127.0.0.1:1/token',
      },
      { now: () => now, fetch: fakeFetch({ status: 200, body: { access_token: 'sa' } }, captured) },
    );
    assert.deepEqual(await fetchToken(), { accessToken: 'sa', expiresInMs: 3_600_000 });
    const form = captured[0]!.form;
    assert.equal(form.get('grant_type'), 'urn:ietf:params:oauth:grant-type:jwt-bearer');
    const [header, claims, signature] = form.get('assertion')!.split('.');
    assert.deepEqual(JSON.parse(Buffer.from(header!, 'base64url').toString()), { alg: 'RS256', typ: 'JWT' });
    assert.deepEqual(JSON.parse(Buffer.from(claims!, 'base64url').toString()), {
      iss: 'sender@project.iam.gserviceaccount.com',
      sub: 'relay@corp.example',
      scope: 'https://mail.google.com/',
      aud: 'http://127.0.0.1:1/token',
      iat: now / 1000,
      exp: now / 1000 + 3600,
    });
    const valid = createVerify('RSA-SHA256')
      .update(`${header}.${claims}`)
      .verify(publicKey, Buffer.from(signature!, 'base64url'));
    assert.ok(valid, 'signature verifies with the public key');
  });
});
