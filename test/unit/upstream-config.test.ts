// The upstream keys of issue 6 in the config: `auth: { type: oauth2, ... }` checked per
// provider, secrets read from their files and kept out of anything that lists or serialises
// the config, and `backoff:` with its defaults.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import { ConfigError, parseConfig } from '../../src/config/load.js';
import { makeTempDir } from '../helpers/tmp.js';

const parse = (upstream: Record<string, unknown>, baseDir = '/') =>
  parseConfig({ upstream: { host: '127.0.0.1', ...upstream } }, { env: {}, baseDir, source: 'test.yml' });

function problems(upstream: Record<string, unknown>): string[] {
  try {
    parse(upstream);
  } catch (err) {
    assert.ok(err instanceof ConfigError, String(err));
    return err.problems;
  }
  assert.fail('expected a ConfigError');
}

describe('upstream config', () => {
  test('backoff defaults to 30 s doubling to 5 min', () => {
    const config = parse({});
    assert.deepEqual(config.upstreams[0]!.backoff, { initial: 30_000, max: 300_000 });
    assert.deepEqual(parse({ backoff: { initial: '1s', max: '2s' } }).upstreams[0]!.backoff, {
      initial: 1000,
      max: 2000,
    });
    assert.match(problems({ backoff: { initial: '1m', max: '10s' } }).join('\n'), /backoff\.max/);
  });

  test('Microsoft 365: secret from a file, kept out of listings and JSON', async () => {
    const dir = await makeTempDir('smarthost-upstream-config');
    await fs.writeFile(path.join(dir, 'secret'), 'the-client-secret\n');
    const config = parse(
      {
        auth: {
          type: 'oauth2',
          provider: 'microsoft',
          tenant: 'corp.example',
          clientId: 'app',
          clientSecretFile: 'secret',
          user: 'relay@corp.example',
        },
      },
      dir,
    );
    const auth = config.upstreams[0]!.auth!;
    assert.equal(auth.clientSecret?.reveal(), 'the-client-secret');
    assert.equal(auth.user, 'relay@corp.example');
    assert.ok(!JSON.stringify(config).includes('the-client-secret'));
    assert.equal(String(auth.clientSecret), '***');
  });

  test('Google service account key file: parsed, the private key hidden', async () => {
    const dir = await makeTempDir('smarthost-upstream-config');
    const key = {
      type: 'service_account',
      client_email: 'sa@p.iam.gserviceaccount.com',
      private_key: 'PEM-KEY',
    };
    await fs.writeFile(path.join(dir, 'key.json'), JSON.stringify(key));
    const config = parse(
      {
        user: 'relay@corp.example',
        auth: { type: 'oauth2', provider: 'google', serviceAccountFile: 'key.json' },
      },
      dir,
    );
    const auth = config.upstreams[0]!.auth!;
    assert.equal(auth.user, 'relay@corp.example', 'the upstream user is the default');
    assert.equal(auth.serviceAccount?.clientEmail, 'sa@p.iam.gserviceaccount.com');
    assert.equal(auth.serviceAccount?.privateKey.reveal(), 'PEM-KEY');
    assert.ok(!JSON.stringify(config).includes('PEM-KEY'));
  });

  test('what each provider needs, and what does not go together, is named', () => {
    const ms = { type: 'oauth2', provider: 'microsoft', user: 'a@b.example' };
    const text = problems({ auth: ms }).join('\n');
    assert.match(text, /upstream\.auth\.tenant/);
    assert.match(text, /upstream\.auth\.clientId/);
    assert.match(text, /upstream\.auth\.clientSecret/);
    assert.match(
      problems({ pass: 'x', auth: { ...ms, tenant: 't', clientId: 'c', clientSecret: 's' } }).join('\n'),
      /either pass\/passFile or auth/,
    );
    assert.match(
      problems({ auth: { type: 'oauth2', provider: 'google', user: 'a@b.example' } }).join('\n'),
      /serviceAccountFile/,
    );
    assert.match(
      problems({
        auth: { ...ms, tenant: 't', clientId: 'c', clientSecret: 's', tokenUrl: 'http://auth.example/t' },
      }).join('\n'),
      /https:\/\/ URL/,
    );
    assert.match(
      problems({
        auth: { type: 'oauth2', provider: 'google', serviceAccountFile: '/nonexistent/key.json' },
      }).join('\n'),
      /upstream\.auth\.user|cannot read/,
    );
  });

  test('http on loopback is allowed for the token endpoint (a stand-in)', () => {
    const config = parse({
      auth: {
        type: 'oauth2',
        provider: 'microsoft',
        clientId: 'c',
        clientSecret: 's',
        user: 'a@b.example',
        tokenUrl: 'http://127.0.0.1:8080/token',
      },
    });
    assert.equal(config.upstreams[0]!.auth!.tokenUrl, 'http://127.0.0.1:8080/token');
  });
});
