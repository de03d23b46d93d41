// The policy engine on a parsed config, with a clock the test moves: each refusal's reply
// (code, enhanced code, and a sentence naming the source and the limit), and the counters
// carried over to the engine that replaces it on reload.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseConfig, type Config } from '../../src/config/load.js';
import { PolicyEngine, PolicyState } from '../../src/policy/engine.js';
import { SourceResolver } from '../../src/policy/sources.js';
import { SmtpError } from '../../src/smtp/errors.js';

function config(input: Record<string, unknown>): Config {
  return parseConfig(input, { env: {}, baseDir: '/tmp', source: 'test' });
}

function engineWithClock(input: Record<string, unknown>) {
  let t = 5_000_000;
  const state = new PolicyState(() => t);
  return { engine: new PolicyEngine(config(input), { state }), advance: (ms: number) => (t += ms), state };
}

async function refusal(fn: () => unknown): Promise<SmtpError> {
  try {
    await fn();
  } catch (err) {
    assert.ok(err instanceof SmtpError, String(err));
    return err;
  }
  assert.fail('expected a refusal');
}

const FLOOR3 = {
  cidr: '10.20.30.0/24',
  name: 'floor3-printers',
  sender: 'scanner@corp.example',
  rateLimit: '10/min',
  recipientRateLimit: '3/hour',
  allowedRecipientDomains: ['corp.example'],
  maxRecipients: 5,
  maxMessageSize: '1MB',
};

describe('PolicyEngine', () => {
  test('message rate: 10 of 15 pass, then 450 4.7.1 naming the rate, the source and when to retry', async () => {
    const { engine, advance } = engineWithClock({ allowlist: [FLOOR3] });
    const client = { ip: '10.20.30.40' };
    for (let i = 0; i < 10; i++) await engine.checkMail(client, 'scan@printer.local');
    const errors = [];
    for (let i = 0; i < 5; i++)
      errors.push(await refusal(() => engine.checkMail(client, 'scan@printer.local')));
    for (const err of errors) {
      assert.equal(err.code, 450);
      assert.equal(err.enhanced, '4.7.1');
      assert.equal(
        err.message,
        '4.7.1 Rate limit 10/min exceeded for source floor3-printers, try again in 6 seconds',
      );
    }
    advance(60_000);
    await engine.checkMail(client, 'scan@printer.local');
  });

  test('the rate is per source, shared by every address of it (and IPv4-mapped IPv6 is the same client)', async () => {
    const { engine } = engineWithClock({ allowlist: [{ ...FLOOR3, rateLimit: '2/min' }] });
    await engine.checkMail({ ip: '10.20.30.1' }, 'a@corp.example');
    await engine.checkMail({ ip: '::ffff:10.20.30.2' }, 'a@corp.example');
    assert.equal((await refusal(() => engine.checkMail({ ip: '10.20.30.3' }, 'a@corp.example'))).code, 450);
  });

  test('recipients: domains, count and rate, in words', async () => {
    const { engine } = engineWithClock({ allowlist: [FLOOR3] });
    const source = await engine.checkMail({ ip: '10.20.30.40' }, 'scan@printer.local');
    const gmail = await refusal(() => engine.checkRcpt(source, 'someone@gmail.com', 1));
    assert.equal(gmail.message, '5.7.1 Recipient domain gmail.com not allowed for source floor3-printers');
    assert.equal(gmail.code, 550);
    const many = await refusal(() => engine.checkRcpt(source, 'a@corp.example', 6));
    assert.equal(many.code, 452);
    assert.match(many.message, /at most 5 per message for source floor3-printers/);
    for (let i = 0; i < 3; i++) await engine.checkRcpt(source, `r${i}@corp.example`, 1);
    const rate = await refusal(() => engine.checkRcpt(source, 'r4@corp.example', 1));
    assert.equal(rate.code, 450);
    assert.equal(
      rate.message,
      '4.7.1 Recipient rate limit 3/hour exceeded for source floor3-printers, try again in 1200 seconds',
    );
  });

  test('refused recipients do not use up the recipient rate', async () => {
    const { engine } = engineWithClock({ allowlist: [FLOOR3] });
    const source = await engine.checkMail({ ip: '10.20.30.40' }, 'scan@printer.local');
    for (let i = 0; i < 10; i++) await refusal(() => engine.checkRcpt(source, 'x@gmail.com', 1));
    for (let i = 0; i < 3; i++) await engine.checkRcpt(source, `r${i}@corp.example`, 1);
  });

  test('allowedSenders: a sender outside the patterns is refused with 550 5.7.1 naming the source', async () => {
    const { engine } = engineWithClock({
      allowlist: [],
      users: [{ name: 'crm', password: 'scrypt$x', allowedSenders: ['*@corp.example'] }],
    });
    await engine.checkMail({ ip: '192.0.2.1', user: 'crm' }, 'crm@corp.example');
    const err = await refusal(() => engine.checkMail({ ip: '192.0.2.1', user: 'crm' }, 'ceo@gmail.com'));
    assert.equal(err.code, 550);
    assert.equal(
      err.message,
      '5.7.1 Sender <ceo@gmail.com> not allowed for source crm (see its allowedSenders)',
    );
    assert.equal((await refusal(() => engine.checkMail({ ip: '192.0.2.1', user: 'crm' }, ''))).code, 550);
  });

  test('declared SIZE over the source limit: 552 5.3.4 with the limit as the config writes it', async () => {
    const { engine } = engineWithClock({ allowlist: [FLOOR3] });
    const err = await refusal(() =>
      engine.checkMail({ ip: '10.20.30.40' }, 'a@corp.example', 2 * 1024 * 1024),
    );
    assert.equal(
      err.message,
      '5.3.4 Message too big: the limit for source floor3-printers is 1MB (maxMessageSize)',
    );
  });

  test('routing forms in MAIL and RCPT: 553 5.1.3', async () => {
    const { engine } = engineWithClock({ allowlist: [FLOOR3] });
    assert.equal(
      (await refusal(() => engine.checkMail({ ip: '10.20.30.40' }, 'a%b@corp.example'))).enhanced,
      '5.1.3',
    );
    const source = await engine.checkMail({ ip: '10.20.30.40' }, 'a@corp.example');
    const err = await refusal(() => engine.checkRcpt(source, 'host!user@corp.example', 1));
    assert.equal(err.code, 553);
    assert.match(err.message, /^5\.1\.3 Address "host!user@corp\.example" rejected: bang paths/);
  });

  test('connections: in total and per address, 421 4.7.0 naming the limit', async () => {
    const { engine } = engineWithClock({
      limits: { maxConnections: 3, maxConnectionsPerIp: 2, maxUntrustedConnections: 3 },
    });
    const close1 = engine.openConnection('10.0.0.1');
    engine.openConnection('::ffff:10.0.0.1');
    const perIp = await refusal(() => engine.openConnection('10.0.0.1'));
    assert.equal(perIp.code, 421);
    assert.equal(
      perIp.message,
      '4.7.0 Too many connections from 10.0.0.1: at most 2 at once (limits.maxConnectionsPerIp), try again in a moment',
    );
    engine.openConnection('10.0.0.2');
    const total = await refusal(() => engine.openConnection('10.0.0.3'));
    assert.match(
      total.message,
      /^4\.7\.0 Too many connections: the relay serves at most 3 at once \(limits\.maxConnections\)/,
    );
    close1();
    engine.openConnection('10.0.0.3');
  });

  test('failed logins: the 5th within 10m locks a stranger out of AUTH and connecting for 15m', async () => {
    const { engine, advance } = engineWithClock({});
    for (let i = 0; i < 4; i++) assert.equal(await engine.authFailed('198.51.100.7', `user${i}`), undefined);
    const lockout = await engine.authFailed('198.51.100.7', 'user4');
    assert.ok(lockout);
    assert.equal(lockout.code, 421);
    assert.equal(
      lockout.message,
      '4.7.0 Too many failed logins from 198.51.100.7 (5 within 10m, limits.maxAuthFailures): refused for 15m, try again later',
    );
    assert.equal((await refusal(() => engine.openConnection('198.51.100.7'))).reason, 'auth_lockout');
    assert.equal((await refusal(() => engine.checkAuthLockout('198.51.100.7'))).reason, 'auth_lockout');
    engine.openConnection('198.51.100.8');
    advance(15 * 60_000);
    engine.openConnection('198.51.100.7');
  });

  test('a lockout of an allowlisted address blocks AUTH only (454), never its connections or mail', async () => {
    const { engine } = engineWithClock({ allowlist: [FLOOR3] });
    for (let i = 0; i < 4; i++) await engine.authFailed('10.20.30.40', `u${i}`);
    const lockout = await engine.authFailed('10.20.30.40', 'u4');
    assert.equal(lockout?.code, 454);
    assert.match(lockout?.message ?? '', /AUTH refused for 15m/);
    assert.equal((await refusal(() => engine.checkAuthAllowed('10.20.30.40'))).code, 454);
    assert.equal((await refusal(() => engine.checkAuthLockout('10.20.30.40', 'u9'))).code, 454);
    const release = engine.openConnection('10.20.30.40');
    assert.equal((await engine.checkMail({ ip: '10.20.30.40' }, 'a@corp.example')).name, 'floor3-printers');
    release();
  });

  test('failed logins are counted per username across addresses too', async () => {
    const { engine } = engineWithClock({});
    for (let i = 0; i < 4; i++)
      assert.equal(await engine.authFailed(`198.51.100.${i + 1}`, 'Admin'), undefined);
    const lockout = await engine.authFailed('198.51.100.9', 'admin');
    assert.equal(lockout?.code, 454);
    assert.match(lockout?.message ?? '', /^4\.7\.0 Too many failed logins for this user/);
    assert.equal((await refusal(() => engine.checkAuthAllowed('198.51.100.20', 'ADMIN'))).code, 454);
    assert.equal((await refusal(() => engine.checkAuthLockout('198.51.100.20', 'ADMIN'))).code, 454);
    engine.checkAuthAllowed('198.51.100.20', 'someone-else');
    await engine.checkAuthLockout('198.51.100.20', 'someone-else');
    engine.openConnection('198.51.100.20');
  });

  test('untrusted clients have their own share of connections; logging in moves one out of it', async () => {
    const { engine } = engineWithClock({
      allowlist: [FLOOR3],
      limits: { maxConnections: 6, maxUntrustedConnections: 2 },
    });
    const first = engine.openConnection('192.0.2.1');
    engine.openConnection('192.0.2.2');
    const err = await refusal(() => engine.openConnection('192.0.2.3'));
    assert.equal(err.code, 421);
    assert.match(err.message, /^4\.7\.0 .*limits\.maxUntrustedConnections/);
    // A device still gets in.
    engine.openConnection('10.20.30.40');
    first.trust();
    engine.openConnection('192.0.2.3');
    assert.equal(engine.state.connections.untrusted, 2);
  });

  test('maxUntrustedConnections defaults to a quarter of maxConnections', () => {
    assert.equal(config({}).limits.maxUntrustedConnections, 250);
    assert.equal(config({ limits: { maxConnections: 8 } }).limits.maxUntrustedConnections, 2);
    assert.throws(
      () => config({ limits: { maxConnections: 8, maxUntrustedConnections: 9 } }),
      /maxUntrustedConnections/,
    );
  });

  test('a reloaded engine takes over the counters of the one it replaces', async () => {
    const first = new PolicyEngine(config({ allowlist: [{ ...FLOOR3, rateLimit: '1/hour' }] }));
    await first.checkMail({ ip: '10.20.30.40' }, 'a@corp.example');
    const second = new PolicyEngine(config({ allowlist: [{ ...FLOOR3, rateLimit: '1/hour' }] }), {
      previous: first,
    });
    assert.equal((await refusal(() => second.checkMail({ ip: '10.20.30.40' }, 'a@corp.example'))).code, 450);
  });

  test("AUTH before TLS only where the client's network (or defaults) opted in", async () => {
    const { engine } = engineWithClock({
      allowlist: [
        { cidr: '10.1.0.0/16', name: 'legacy', allowInsecureAuth: true },
        { cidr: '10.2.0.0/16', name: 'modern' },
      ],
    });
    assert.equal(engine.insecureAuthAllowed('10.1.2.3'), true);
    assert.equal(engine.insecureAuthAllowed('10.2.2.3'), false);
    assert.equal(engine.insecureAuthAllowed('192.0.2.1'), false);
    const open = engineWithClock({ defaults: { allowInsecureAuth: true }, allowlist: [] }).engine;
    assert.equal(open.insecureAuthAllowed('192.0.2.1'), true);
  });
});

describe('sources by address', () => {
  test('the most specific entry, asked again (from the cache), gives the same answer; unknown stays unknown', async () => {
    const sources = new SourceResolver(
      config({
        allowlist: [
          { cidr: '10.20.0.0/16', name: 'building' },
          { cidr: '10.20.30.0/24', name: 'floor3' },
          { cidr: 'fd00::/64', name: 'v6-lan' },
        ],
      }),
    );
    for (let round = 0; round < 2; round++) {
      assert.equal(sources.byAddress('10.20.30.7')?.name, 'floor3');
      assert.equal(sources.byAddress('::ffff:10.20.1.1')?.name, 'building');
      assert.equal(sources.byAddress('fd00::1')?.name, 'v6-lan');
      assert.equal(sources.byAddress('10.21.0.1'), undefined);
      assert.equal(sources.byAddress('not an address'), undefined);
    }
    // Each caller gets its own copy: changing one answer does not change the next.
    const first = sources.byAddress('10.20.30.7')!;
    first.name = 'changed';
    assert.equal(sources.byAddress('10.20.30.7')?.name, 'floor3');
  });
});
