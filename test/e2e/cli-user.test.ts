// Issue 4, acceptance 6: `user add crm --password-stdin`, then AUTH as crm over STARTTLS works;
// and the commands around it: user list/passwd/remove, check-config (secrets masked), send-test.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { sendMail } from '../helpers/client.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { runCli, show } from './cli-common.js';

// Outside the allowlist (127.0.0.1/32 only): this client can send only by logging in.
const OUTSIDE = '127.0.0.2';

describe('cli: users, check-config and send-test', () => {
  let relay: Relay;
  const cli = (args: string[], input?: string) =>
    runCli([...args, '-c', relay.configFile], { cwd: relay.dir, input });
  const sendAs = (user: string, pass: string) =>
    sendMail({
      port: relay.port,
      localAddress: OUTSIDE,
      from: 'crm@corp.example',
      to: ['customer@example.com'],
      auth: { user, pass },
      requireTls: true,
    });

  before(async () => {
    relay = await startRelay({ config: { allowlist: [{ cidr: '127.0.0.1/32', name: 'local' }] } });
  });

  after(async () => {
    await relay?.stop();
  });

  test('acceptance 6: user add --password-stdin, then AUTH over STARTTLS works; only a hash is stored', async () => {
    const anonymous = await sendMail({
      port: relay.port,
      localAddress: OUTSIDE,
      from: 'crm@corp.example',
      to: ['customer@example.com'],
    });
    assert.equal(anonymous.ok, false, 'a client outside the allowlist sent without a login');

    const added = await cli(
      ['user', 'add', 'crm', '--sender', 'crm@corp.example', '--password-stdin'],
      'Tr0ub4dor&3\n',
    );
    assert.equal(added.code, 0, show(added));
    const text = await fs.readFile(relay.configFile, 'utf8');
    assert.match(text, /name: crm\n\s+password: scrypt\$/);
    assert.ok(!text.includes('Tr0ub4dor'), 'the password itself was written');

    const sent = await sendAs('crm', 'Tr0ub4dor&3');
    assert.ok(sent.ok, sent.response);
    assert.ok(sent.queueId);
    const wrong = await sendAs('crm', 'Tr0ub4dor&4');
    assert.equal(wrong.ok, false);
    assert.equal(wrong.ok === false && wrong.code, 535);

    const list = await cli(['user', 'list']);
    assert.equal(list.code, 0, show(list));
    assert.match(list.stdout, /^crm\s+crm@corp\.example/m);
    assert.doesNotMatch(list.stdout, /scrypt/);

    const taken = await cli(['user', 'add', 'local', '--password-stdin'], 'x\n');
    assert.equal(taken.code, 1, show(taken));
    assert.match(taken.stderr, /already used by allowlist entry local/);

    const noTty = await cli(['user', 'add', 'other']);
    assert.equal(noTty.code, 2, show(noTty));
    assert.match(noTty.stderr, /--password-stdin/);
  });

  test('user passwd changes the password; user remove ends the login', async () => {
    const changed = await cli(['user', 'passwd', 'crm', '--password-stdin'], 'correct horse battery staple');
    assert.equal(changed.code, 0, show(changed));
    assert.equal((await sendAs('crm', 'Tr0ub4dor&3')).ok, false, 'the old password still works');
    const ok = await sendAs('crm', 'correct horse battery staple');
    assert.ok(ok.ok, ok.response);

    const removed = await cli(['user', 'remove', 'crm']);
    assert.equal(removed.code, 0, show(removed));
    assert.equal(
      (await sendAs('crm', 'correct horse battery staple')).ok,
      false,
      'a removed user can still log in',
    );

    const unknown = await cli(['user', 'remove', 'crm']);
    assert.equal(unknown.code, 1, show(unknown));
  });

  test('check-config prints the effective config with secrets masked', async () => {
    await cli(['user', 'add', 'masked', '--password-stdin'], 'hunter2');
    const checked = await cli(['check-config']);
    assert.equal(checked.code, 0, show(checked));
    assert.match(checked.stderr, /config OK/);
    assert.match(checked.stdout, /name: masked\n\s+password: "\*\*\*"/);
    assert.doesNotMatch(checked.stdout, /scrypt\$/);
    assert.match(checked.stdout, /maxAge: 3d/);

    const bad = await runCli(['check-config', '-c', `${relay.dir}/missing.yml`], { cwd: relay.dir });
    assert.equal(bad.code, 1, show(bad));
    assert.match(bad.stderr, /cannot read the file/);
  });

  test('send-test sends through the relay and prints the queue id', async () => {
    const sent = await cli([
      'send-test',
      '--to',
      'someone@example.com',
      '--server',
      `127.0.0.1:${relay.port}`,
    ]);
    assert.equal(sent.code, 0, show(sent));
    const id = /queue id: (\S+)/.exec(sent.stdout)?.[1];
    assert.ok(id, sent.stdout);
    await relay.waitForOutput(new RegExp(id));
  });
});
