// Issue 4, acceptance 1-4: the allowlist editor and live reload, through the real CLI against
// a real running relay. Loopback only: "the lab network" is 127.9.8.0/24, bound as a source.
import assert from 'node:assert/strict';
import { promises as fs } from 'node:fs';
import { after, before, describe, test } from 'node:test';
import YAML from 'yaml';
import { sendMail } from '../helpers/client.js';
import { startRelay, type Relay } from '../helpers/relay.js';
import { openSession, runCli, show } from './cli-common.js';
import { waitUntil } from './relay-common.js';

const LAB_CLIENT = '127.9.8.7';

/** The config as an admin would write it: comments everywhere, including inside the list. */
function commentedConfig(relay: Relay): string {
  const c = relay.config as { listen: { host: string; port: number }[]; spool: { dir: string } };
  return [
    '# smarthost for the head office',
    '# owner: it-ops@corp.example',
    'hostname: relay.test # the name in the greeting',
    'listen:',
    `  - host: ${c.listen[0]!.host}`,
    `    port: ${c.listen[0]!.port} # tests pick a free port`,
    'spool:',
    `  dir: "${c.spool.dir}"`,
    'log:',
    '  level: debug',
    '',
    '# Who may send without a login.',
    'allowlist:',
    '  # the monitoring box',
    '  - cidr: 127.0.0.1/32',
    '    name: local # keep this one',
    '',
    '# end of file',
    '',
  ].join('\n');
}

const COMMENTS = [
  '# smarthost for the head office',
  '# owner: it-ops@corp.example',
  '# the name in the greeting',
  '# tests pick a free port',
  '# Who may send without a login.',
  '# the monitoring box',
  '# keep this one',
  '# end of file',
];

describe('cli: allowlist editor and live reload', () => {
  let relay: Relay;
  let file: string;
  const cli = (...args: string[]) => runCli([...args, '-c', file], { cwd: relay.dir });

  before(async () => {
    relay = await startRelay({ config: { allowlist: [{ cidr: '127.0.0.1/32', name: 'local' }] } });
    file = relay.configFile;
    // Replace the generated file by a commented one with the same meaning: the relay picks it
    // up by itself (file watch), which is the first thing to work.
    const since = relay.output().length;
    await fs.writeFile(file, commentedConfig(relay));
    await relay.waitForOutput(/config reloaded \(file changed\)/, 10_000, { since });
  });

  after(async () => {
    await relay?.stop();
  });

  test('acceptance 1: add keeps every comment, takes effect without a restart, open sessions finish', async () => {
    const before = await sendMail({
      port: relay.port,
      localAddress: LAB_CLIENT,
      from: 'lab@corp.example',
      to: ['a@example.com'],
    });
    assert.equal(before.ok, false, 'a client outside the allowlist was accepted');

    // A session from an allowed client, opened before the edit and left mid-transaction.
    const open = await openSession(relay.port, '127.0.0.1');
    assert.match(open.greeting, /^220 /);
    assert.match(await open.send('EHLO old.client.test'), /^250/);
    assert.match(await open.send('MAIL FROM:<monitor@corp.example>'), /^250/);
    assert.match(await open.send('RCPT TO:<ops@example.com>'), /^250/);

    const oldText = await fs.readFile(file, 'utf8');
    const added = await cli('allowlist', 'add', '127.9.8.0/24', '--name', 'lab');
    assert.equal(added.code, 0, show(added));
    assert.match(added.stdout, /added lab: 127\.9\.8\.0\/24/);
    assert.match(added.stdout, /reloaded/);

    const newText = await fs.readFile(file, 'utf8');
    for (const comment of COMMENTS)
      assert.ok(newText.includes(comment), `comment lost: ${comment}\n${newText}`);
    // Nothing else changed: the new entry is the only difference.
    assert.equal(
      newText,
      oldText.replace(
        '    name: local # keep this one\n',
        '    name: local # keep this one\n  - cidr: 127.9.8.0/24\n    name: lab\n',
      ),
    );
    const parsed = YAML.parse(newText) as { allowlist: { cidr: string; name: string }[] };
    assert.deepEqual(parsed.allowlist, [
      { cidr: '127.0.0.1/32', name: 'local' },
      { cidr: '127.9.8.0/24', name: 'lab' },
    ]);
    assert.equal(await fs.readFile(`${file}.bak`, 'utf8'), oldText, 'the previous version is not in .bak');

    // The new network can send now, without a restart (waiting a little for the reload).
    const sent = await waitUntil(
      'the lab network to be allowed',
      async () => {
        const r = await sendMail({
          port: relay.port,
          localAddress: LAB_CLIENT,
          from: 'lab@corp.example',
          to: ['a@example.com'],
        });
        return r.ok ? r : undefined;
      },
      10_000,
      250,
    );
    assert.ok(sent.queueId, sent.response);

    // The session opened before the edit finishes normally.
    assert.match(await open.send('DATA'), /^354/);
    assert.match(
      await open.send('Subject: before the edit\r\n\r\nstill here\r\n.'),
      /^250 2\.0\.0 .*queued as/,
    );
    assert.match(await open.send('QUIT'), /^221/);
    open.close();
  });

  test('acceptance 2: 0.0.0.0/0 is refused, --force or not; --force allows a narrower public range, acknowledged', async () => {
    const textBefore = await fs.readFile(file, 'utf8');
    const refused = await cli('allowlist', 'add', '0.0.0.0/0', '--name', 'all');
    assert.equal(refused.code, 1, show(refused));
    assert.match(refused.stderr, /open relay/i);
    assert.equal(await fs.readFile(file, 'utf8'), textBefore, 'a refused edit changed the file');

    // Too wide to be anyone's network: no flag allows it (the config's validation would not either).
    for (const wide of ['0.0.0.0/0', '192.0.0.0/7', '::/0', '::ffff:0.0.0.0/100']) {
      const forced = await cli('allowlist', 'add', wide, '--name', 'all', '--force');
      assert.equal(forced.code, 1, `${wide}\n${show(forced)}`);
      assert.match(forced.stderr, /5\.7\.1 open relay risk: .*no setting allows that/);
    }
    assert.equal(await fs.readFile(file, 'utf8'), textBefore, 'a refused edit changed the file');

    const publicRange = await cli('allowlist', 'add', '198.51.100.0/24', '--name', 'dmz');
    assert.equal(publicRange.code, 1, show(publicRange));
    assert.match(publicRange.stderr, /public internet addresses/);
    assert.match(publicRange.stderr, /--force/);

    const forced = await cli('allowlist', 'add', '198.51.100.0/24', '--name', 'dmz', '--force');
    assert.equal(forced.code, 0, show(forced));
    assert.match(forced.stderr, /WARNING: .*open relay/);
    assert.match(
      await fs.readFile(file, 'utf8'),
      /cidr: 198\.51\.100\.0\/24\n\s+name: dmz\n\s+publicRange: true/,
    );

    const removed = await cli('allowlist', 'remove', 'dmz');
    assert.equal(removed.code, 0, show(removed));
    assert.doesNotMatch(await fs.readFile(file, 'utf8'), /198\.51\.100/);
  });

  test('host bits are normalised with a note; duplicates refused, overlaps noted, names unique', async () => {
    const normalised = await cli(
      'allowlist',
      'add',
      '127.5.5.5/24',
      '--name',
      'hosts',
      '--rate-limit',
      '60/min',
    );
    assert.equal(normalised.code, 0, show(normalised));
    assert.match(normalised.stderr, /host bits set.*127\.5\.5\.0\/24/);
    assert.match(
      await fs.readFile(file, 'utf8'),
      /cidr: 127\.5\.5\.0\/24\n\s+name: hosts\n\s+rateLimit: 60\/min/,
    );

    const duplicate = await cli('allowlist', 'add', '127.5.5.0/24', '--name', 'again');
    assert.equal(duplicate.code, 1, show(duplicate));
    assert.match(duplicate.stderr, /already in the allowlist as hosts/);

    const sameName = await cli('allowlist', 'add', '127.6.0.0/16', '--name', 'hosts');
    assert.equal(sameName.code, 1, show(sameName));
    assert.match(sameName.stderr, /name "hosts" is already used/);

    const overlap = await cli('allowlist', 'add', '127.5.0.0/16', '--name', 'wider');
    assert.equal(overlap.code, 0, show(overlap));
    assert.match(overlap.stderr, /127\.5\.0\.0\/16 contains hosts \(127\.5\.5\.0\/24\)/);

    const invalid = await cli(
      'allowlist',
      'add',
      '127.7.0.0/16',
      '--name',
      'bad-rate',
      '--rate-limit',
      'lots',
    );
    assert.equal(invalid.code, 1, show(invalid));
    assert.match(invalid.stderr, /rateLimit/);

    const noName = await cli('allowlist', 'add', '127.8.0.0/16');
    assert.equal(noName.code, 2, show(noName));
    const badCidr = await cli('allowlist', 'add', '127.8.0.0/33', '--name', 'x');
    assert.equal(badCidr.code, 2, show(badCidr));

    const list = await cli('allowlist', 'list', '--json');
    assert.equal(list.code, 0, show(list));
    const names = (JSON.parse(list.stdout) as { name: string }[]).map((e) => e.name);
    assert.deepEqual(names, ['local', 'lab', 'hosts', 'wider']);
  });

  test('acceptance 3: allowlist test names the entry and its policy; outside every entry it is refused', async () => {
    const lab = await cli('allowlist', 'test', LAB_CLIENT);
    assert.equal(lab.code, 0, show(lab));
    assert.match(lab.stdout, /matches lab \(127\.9\.8\.0\/24\)/);
    assert.match(lab.stdout, /policy/);

    const specific = await cli('allowlist', 'test', '127.5.5.9', '--json');
    assert.equal(specific.code, 0, show(specific));
    const report = JSON.parse(specific.stdout) as {
      match: { name: string };
      policy: { rateLimit?: { text: string } };
    };
    assert.equal(report.match.name, 'hosts', 'the most specific entry should match');
    assert.equal(report.policy.rateLimit?.text, '60/min');

    const outside = await cli('allowlist', 'test', '127.99.0.1');
    assert.equal(outside.code, 1, show(outside));
    assert.match(outside.stdout, /matches no allowlist entry.*would be refused/);
  });

  test('acceptance 4: a broken file keeps the old config serving, and reload exits non-zero naming the error', async () => {
    const good = await fs.readFile(file, 'utf8');
    const since = relay.output().length;
    await fs.writeFile(file, `${good}\nlisten: [ { port: 25\n`);
    await relay.waitForOutput(/config reload refused \(file changed\)/, 10_000, { since });

    const reload = await cli('reload');
    assert.equal(reload.code, 1, show(reload));
    assert.match(reload.stderr, /not valid YAML/);
    assert.match(reload.stderr, /keeps running with its previous config/);

    // Still serving with the config from before: the lab network is still allowed.
    const sent = await sendMail({
      port: relay.port,
      localAddress: LAB_CLIENT,
      from: 'lab@corp.example',
      to: ['a@example.com'],
    });
    assert.ok(sent.ok, sent.response);

    // Valid YAML, invalid config: the key is named.
    await fs.writeFile(file, good.replace('cidr: 127.9.8.0/24', 'cidr: 127.9.8.0/99'));
    const badKey = await cli('reload');
    assert.equal(badKey.code, 1, show(badKey));
    assert.match(badKey.stderr, /allowlist\.1\.cidr/);

    // An edit by the CLI on top of a broken file is refused, and writes nothing.
    const broken = await fs.readFile(file, 'utf8');
    const edit = await cli('allowlist', 'add', '127.4.0.0/16', '--name', 'more');
    assert.equal(edit.code, 1, show(edit));
    assert.equal(await fs.readFile(file, 'utf8'), broken);

    await fs.writeFile(file, good);
    const fixed = await cli('reload');
    assert.equal(fixed.code, 0, show(fixed));
    assert.match(fixed.stdout, /reloaded/);
  });
});
