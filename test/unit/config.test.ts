// Loading the config: where it is found, the built-in defaults (capture mode), the documented
// keys, environment overrides and secrets from files, and errors that name key, value and what
// is allowed.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { describe, test } from 'node:test';
import {
  ConfigError,
  findConfigFile,
  loadConfig,
  parseConfig,
  parseConfigText,
} from '../../src/config/load.js';
import { hashPassword } from '../../src/policy/passwords.js';
import { makeTempDir } from '../helpers/tmp.js';

const parse = (input: Record<string, unknown>, env: NodeJS.ProcessEnv = {}, baseDir = '/etc/smarthost') =>
  parseConfig(input, { env, baseDir, source: 'test.yml' });

/** The problems of a config that must not load. */
function problems(input: Record<string, unknown>, env: NodeJS.ProcessEnv = {}): string {
  try {
    parse(input, env);
  } catch (err) {
    assert.ok(err instanceof ConfigError, `a ConfigError, got ${String(err)}`);
    return err.message;
  }
  assert.fail(`accepted: ${JSON.stringify(input)}`);
}

describe('config defaults', () => {
  test('retention: 30d for dead letters, 7d for the outbox; queue.deadLetterMaxAge is retention.failed', () => {
    const day = 24 * 3600_000;
    assert.deepEqual(parse({}).retention, { failed: 30 * day, outbox: 7 * day });
    assert.equal(parse({ queue: { deadLetterMaxAge: '2d' } }).retention.failed, 2 * day);
    assert.equal(
      parse({ queue: { deadLetterMaxAge: 'off' }, retention: { failed: '9d' } }).retention.failed,
      0,
    );
    assert.match(problems({ queue: { deadLetterMaxAge: 'soon' } }), /deadLetterMaxAge/);
  });

  test('an empty config: 127.0.0.1:2525, this machine only, ./data, capture mode', () => {
    const config = parse({}, {}, '/srv/relay');
    assert.deepEqual(
      config.listen.map((l) => [l.host, l.port, l.requireTls, l.implicitTls]),
      [['127.0.0.1', 2525, false, false]],
    );
    assert.deepEqual(
      config.allowlist.map((a) => a.cidr),
      ['127.0.0.0/8', '::1/128'],
    );
    assert.equal(config.spool.dir, '/srv/relay/data');
    assert.deepEqual(config.upstreams, [], 'no upstream: capture mode');
    assert.deepEqual(config.users, []);
    assert.equal(config.queue.maxAge, 72 * 3600_000);
    assert.deepEqual(
      config.queue.retry,
      [1, 5, 15, 30, 60, 120, 240].map((m) => m * 60_000),
    );
    assert.equal(config.limits.maxMessageSize, 25 * 1024 * 1024);
    assert.equal(config.limits.maxRecipients, 100);
    assert.ok(config.hostname.length > 0);
  });

  test('loadConfig with no file anywhere gives the defaults', async () => {
    const dir = await makeTempDir('config');
    const cwd = process.cwd();
    process.chdir(dir);
    try {
      const config = loadConfig(undefined, {});
      assert.equal(config.source, 'built-in defaults');
      assert.equal(config.spool.dir, path.join(dir, 'data'));
    } finally {
      process.chdir(cwd);
    }
  });
});

describe('config keys of issue 2', () => {
  test('the documented example loads into typed values', async () => {
    const hash = await hashPassword('secret');
    // Files the config names must exist: the upstream CA is read when the config is loaded.
    const etc = await makeTempDir('smarthost-etc-');
    await fs.writeFile(path.join(etc, 'corp-ca.pem'), '-----BEGIN CERTIFICATE-----\n');
    const config = parseConfigText(
      [
        'hostname: relay.corp.example',
        'listen:',
        '  - { host: 0.0.0.0, port: 25 }',
        '  - { host: 0.0.0.0, port: 587, requireTls: true }',
        '  - { host: 0.0.0.0, port: 465, implicitTls: true }',
        'tls: { cert: tls.crt, key: /etc/smarthost/tls.key }',
        'upstream:',
        '  host: smtp.sendgrid.net',
        '  port: 587',
        '  tls: starttls',
        '  user: apikey',
        '  pass: "SG.x"',
        '  ca: corp-ca.pem',
        'spool: { dir: /var/spool/smarthost }',
        'queue: { maxAge: 72h, retry: [1m, 5m, 15m, 30m, 1h, 2h, 4h] }',
        'limits: { maxMessageSize: 25MB, maxRecipients: 100 }',
        'bounces: { to: postmaster@corp.example }',
        'allowlist:',
        '  - { cidr: 10.20.30.0/24, name: floor3-printers }',
        'users:',
        `  - { name: crm, password: "${hash}" }`,
      ].join('\n'),
      path.join(etc, 'smarthost.yml'),
      {},
    );
    assert.equal(config.hostname, 'relay.corp.example');
    assert.deepEqual(
      config.listen.map((l) => [l.port, l.requireTls, l.implicitTls]),
      [
        [25, false, false],
        [587, true, false],
        [465, false, true],
      ],
    );
    assert.deepEqual(config.tls, {
      cert: path.join(etc, 'tls.crt'),
      key: '/etc/smarthost/tls.key',
      watch: true,
    });
    assert.equal(config.upstreams.length, 1);
    const [up] = config.upstreams;
    assert.equal(up?.host, 'smtp.sendgrid.net');
    assert.equal(up?.port, 587);
    assert.equal(up?.tls, 'starttls');
    assert.equal(up?.user, 'apikey');
    assert.equal(up?.pass?.reveal(), 'SG.x');
    assert.equal(up?.ca, path.join(etc, 'corp-ca.pem'), 'relative to the config file');
    assert.equal(config.spool.dir, '/var/spool/smarthost');
    assert.equal(config.queue.retry[4], 3600_000);
    assert.equal(config.bounces.to, 'postmaster@corp.example');
    assert.deepEqual(config.allowlist, [{ cidr: '10.20.30.0/24', name: 'floor3-printers' }]);
    assert.equal(config.users[0]?.name, 'crm');
    assert.equal(config.source, path.join(etc, 'smarthost.yml'));
  });

  test('upstream defaults: port 587, STARTTLS required', () => {
    const [up] = parse({ upstream: { host: 'smtp.example.com' } }).upstreams;
    assert.equal(up?.port, 587);
    assert.equal(up?.tls, 'starttls');
  });
});

describe('config errors name the key, the value and what is allowed', () => {
  test('a bad duration', () => {
    const text = problems({ queue: { maxAge: 'forever' } });
    assert.match(text, /queue\.maxAge/);
    assert.match(text, /"forever"/);
    assert.match(text, /duration such as/);
  });

  test('a bad size, port and TLS mode', () => {
    assert.match(problems({ limits: { maxMessageSize: 'huge' } }), /limits\.maxMessageSize.*"huge".*size/);
    assert.match(problems({ listen: [{ port: 70000 }] }), /listen\.0\.port.*70000/);
    assert.match(problems({ upstream: { host: 'h', tls: 'maybe' } }), /upstream\.tls.*"maybe"/);
  });

  test('an unknown key is named (a typo is not silently ignored)', () => {
    assert.match(problems({ spoool: { dir: '/x' } }), /"spoool"/);
    assert.match(problems({ queue: { retries: ['1m'] } }), /queue.*"retries"/);
  });

  test('a bad CIDR, a plain-text password, a user without a password for the upstream', () => {
    assert.match(
      problems({ allowlist: [{ cidr: '10.0.0.0/33', name: 'x' }] }),
      /allowlist\.0\.cidr.*"10\.0\.0\.0\/33"/,
    );
    assert.match(problems({ users: [{ name: 'crm', password: 'hunter2' }] }), /users\.0\.password.*scrypt/);
    assert.match(problems({ upstream: { host: 'h', user: 'apikey' } }), /upstream.*pass/);
  });

  test('every problem is listed, not only the first', () => {
    const text = problems({ queue: { maxAge: 'x' }, limits: { maxRecipients: 0 } });
    assert.match(text, /queue\.maxAge/);
    assert.match(text, /limits\.maxRecipients/);
  });

  test('a file that is not YAML, or not a mapping, or missing', async () => {
    assert.throws(
      () => parseConfigText('listen: [', '/x.yml', {}),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        assert.match(err.message, /not valid YAML/);
        return true;
      },
    );
    assert.throws(() => parseConfigText('- a\n- b\n', '/x.yml', {}), /mapping/);
    const dir = await makeTempDir('config');
    assert.throws(() => loadConfig(path.join(dir, 'missing.yml'), {}), /cannot read the file/);
  });
});

describe('config from the environment and from files', () => {
  test('SMARTHOST_UPSTREAM_* make or override the upstream', () => {
    const env = {
      SMARTHOST_UPSTREAM_HOST: 'smtp.env.example',
      SMARTHOST_UPSTREAM_PORT: '2587',
      SMARTHOST_UPSTREAM_USER: 'envuser',
      SMARTHOST_UPSTREAM_PASS: 'envpass',
    };
    const [fromEnv] = parse({}, env).upstreams;
    assert.deepEqual(
      [fromEnv?.host, fromEnv?.port, fromEnv?.user, fromEnv?.pass?.reveal()],
      ['smtp.env.example', 2587, 'envuser', 'envpass'],
    );
    const [overridden] = parse(
      { upstream: { host: 'file.example', user: 'u', pass: 'filepass' } },
      {
        SMARTHOST_UPSTREAM_PASS: 'envpass',
      },
    ).upstreams;
    assert.equal(overridden?.host, 'file.example');
    assert.equal(overridden?.pass?.reveal(), 'envpass', 'the environment wins');
  });

  test('passFile (or SMARTHOST_UPSTREAM_PASS_FILE) is read, relative to the config file', async () => {
    const dir = await makeTempDir('config');
    await fs.writeFile(path.join(dir, 'pass.txt'), 'from-a-file\n');
    const file = path.join(dir, 'smarthost.yml');
    await fs.writeFile(file, 'upstream: { host: smtp.example.com, user: apikey, passFile: pass.txt }\n');
    assert.equal(loadConfig(file, {}).upstreams[0]?.pass?.reveal(), 'from-a-file', 'trimmed');
    const viaEnv = parse(
      { upstream: { host: 'h', user: 'u' } },
      { SMARTHOST_UPSTREAM_PASS_FILE: path.join(dir, 'pass.txt') },
    );
    assert.equal(viaEnv.upstreams[0]?.pass?.reveal(), 'from-a-file');
    assert.match(
      problems({ upstream: { host: 'h', user: 'u', passFile: '/nonexistent/pass' } }),
      /upstream\.passFile/,
    );
  });

  test('SMARTHOST_SPOOL_DIR and SMARTHOST_LOG_LEVEL', () => {
    const config = parse(
      { spool: { dir: '/a' } },
      { SMARTHOST_SPOOL_DIR: '/b', SMARTHOST_LOG_LEVEL: 'debug' },
    );
    assert.equal(config.spool.dir, '/b');
    assert.equal(config.log.level, 'debug');
  });
});

describe('findConfigFile', () => {
  test('--config, else $SMARTHOST_CONFIG, else ./smarthost.yml, else none', async () => {
    const dir = await makeTempDir('config');
    const cwd = process.cwd();
    process.chdir(dir);
    try {
      // (An installed relay's /etc/smarthost/smarthost.yml would come next: not looked at here.)
      assert.equal(findConfigFile(undefined, {}, path.join(dir, 'not-installed.yml')), undefined);
      await fs.writeFile(path.join(dir, 'smarthost.yml'), 'hostname: local\n');
      assert.equal(findConfigFile(undefined, {}), path.join(dir, 'smarthost.yml'));
      assert.equal(findConfigFile(undefined, { SMARTHOST_CONFIG: 'env.yml' }), path.join(dir, 'env.yml'));
      assert.equal(findConfigFile('cli.yml', { SMARTHOST_CONFIG: 'env.yml' }), path.join(dir, 'cli.yml'));
      assert.equal(loadConfig(undefined, {}).hostname, 'local');
    } finally {
      process.chdir(cwd);
    }
  });

  test('then the installed one (/etc/smarthost/smarthost.yml), so an admin edits what the service runs', async () => {
    const home = await makeTempDir('config-home');
    const system = path.join(await makeTempDir('config-etc'), 'smarthost.yml');
    const cwd = process.cwd();
    process.chdir(home);
    try {
      assert.equal(findConfigFile(undefined, {}, system), undefined, 'not there: none');
      await fs.writeFile(system, 'hostname: installed\n');
      assert.equal(findConfigFile(undefined, {}, system), system);
      assert.equal(
        findConfigFile(undefined, { SMARTHOST_CONFIG: 'env.yml' }, system),
        path.join(home, 'env.yml'),
      );
      await fs.writeFile(path.join(home, 'smarthost.yml'), 'hostname: local\n');
      assert.equal(
        findConfigFile(undefined, {}, system),
        path.join(home, 'smarthost.yml'),
        './smarthost.yml first',
      );
    } finally {
      process.chdir(cwd);
    }
  });
});

describe('files the config names', () => {
  test('an upstream CA file that cannot be read is a config error naming the key', () => {
    assert.throws(
      () =>
        parseConfigText(
          'upstream: { host: 127.0.0.1, ca: no-such-ca.pem }\n',
          path.join(path.sep, 'nonexistent-dir', 'smarthost.yml'),
          {},
        ),
      (err: Error) => /upstream\.ca: cannot read "no-such-ca\.pem": ENOENT/.test(err.message),
    );
  });
});
