// Legacy devices through the real protocol (issue 3, acceptance 7): a listener with
// `tls.minVersion: TLSv1` takes a TLS 1.0 client (node's TLS client, and swaks when it is
// installed) while a listener with the default minimum refuses it; `starttls: false` does not
// offer STARTTLS at all.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import net from 'node:net';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { rawSmtpSession } from '../helpers/client.js';
import { startRelay, type Relay } from '../helpers/relay.js';

/** What an old printer's TLS stack speaks: TLS 1.0 only, with the ciphers of its day. */
const TLS10: tls.ConnectionOptions = {
  minVersion: 'TLSv1',
  maxVersion: 'TLSv1',
  ciphers: 'DEFAULT:@SECLEVEL=0',
  rejectUnauthorized: false,
};

/** EHLO, STARTTLS, then the TLS handshake; resolves the protocol negotiated, or rejects. */
function starttls(port: number, options: tls.ConnectionOptions): Promise<string> {
  return new Promise((resolve, reject) => {
    const plain = net.connect({ host: '127.0.0.1', port });
    let buffer = '';
    let step = 0;
    plain.once('error', reject);
    plain.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('latin1');
      if (!/(^|\n)\d{3} [^\n]*\r\n$/.test(buffer)) return;
      const reply = buffer;
      buffer = '';
      if (step === 0) plain.write('EHLO old-printer.test\r\n');
      else if (step === 1) plain.write('STARTTLS\r\n');
      else if (step === 2) {
        if (!reply.startsWith('220')) return reject(new Error(`STARTTLS refused: ${reply}`));
        plain.removeAllListeners('data');
        const secure = tls.connect({ socket: plain, ...options });
        secure.once('secureConnect', () => {
          const protocol = secure.getProtocol() ?? '';
          secure.destroy();
          resolve(protocol);
        });
        secure.once('error', (err) => {
          plain.destroy();
          reject(err);
        });
      }
      step++;
    });
  });
}

function hasSwaks(): boolean {
  return spawnSync('swaks', ['--version'], { encoding: 'utf8' }).status === 0;
}

describe('policy: legacy devices (per-listener TLS minimum, no STARTTLS)', () => {
  let relay: Relay;
  const port = (i: number) => Number((relay.config.listen as { port: number }[])[i]?.port);

  before(async () => {
    relay = await startRelay({
      config: {
        listen: [
          { host: '127.0.0.1', tls: { minVersion: 'TLSv1' } },
          { host: '127.0.0.1' },
          { host: '127.0.0.1', starttls: false },
        ],
        allowlist: [{ cidr: '127.0.0.1/32', name: 'printers' }],
      },
    });
  });

  after(async () => {
    await relay?.stop();
  });

  test('the TLSv1 listener accepts a TLS 1.0 client', async () => {
    assert.equal(await starttls(port(0), TLS10), 'TLSv1');
  });

  test('the default listener refuses a TLS 1.0 client, and takes a modern one', async () => {
    await assert.rejects(starttls(port(1), TLS10));
    assert.match(await starttls(port(1), { rejectUnauthorized: false }), /^TLSv1\.[23]$/);
  });

  test('a message goes through the TLSv1 listener over TLS 1.0', async () => {
    const replies = await rawSmtpSession(
      port(0),
      [
        'EHLO old-printer.test',
        'STARTTLS',
        'EHLO old-printer.test',
        'MAIL FROM:<scan@corp.example>',
        'RCPT TO:<alice@corp.example>',
        'DATA',
        'Subject: tls1\r\n\r\nscanned\r\n.',
        'QUIT',
      ],
      // The client can speak nothing newer than TLS 1.0: the whole session is TLS 1.0.
      { tls: TLS10 },
    );
    assert.match(replies[2] ?? '', /^220 /);
    assert.match(replies[6] ?? '', /^354 /);
    assert.match(replies[7] ?? '', /^250 2\.0\.0 Ok: queued as /);
  });

  test(
    'swaks -tls -tlsp tlsv1: accepted by the TLSv1 listener, refused by the default one',
    { skip: !hasSwaks() && 'swaks is not installed' },
    () => {
      const swaks = (p: number) =>
        spawnSync(
          'swaks',
          [
            '--server',
            '127.0.0.1',
            '--port',
            String(p),
            '--helo',
            'old-printer.test',
            '--from',
            'scan@corp.example',
            '--to',
            'alice@corp.example',
            '-tls',
            '-tlsp',
            'tlsv1',
            '--tls-cipher',
            'DEFAULT:@SECLEVEL=0',
            '--timeout',
            '10',
          ],
          { encoding: 'utf8', timeout: 30_000 },
        );
      const legacy = swaks(port(0));
      assert.equal(legacy.status, 0, legacy.stdout + legacy.stderr);
      assert.match(legacy.stdout, /TLS started with cipher TLSv1:/);
      assert.match(legacy.stdout, /<~\s+250 2\.0\.0 Ok: queued as/);
      const modern = swaks(port(1));
      assert.notEqual(modern.status, 0, 'refused by the default listener');
      assert.doesNotMatch(modern.stdout, /queued as/);
    },
  );

  test('starttls: false: STARTTLS is neither offered nor accepted; plain mail still works', async () => {
    const replies = await rawSmtpSession(port(2), [
      'EHLO old-printer.test',
      'STARTTLS',
      'MAIL FROM:<scan@corp.example>',
      'RCPT TO:<alice@corp.example>',
      'QUIT',
    ]);
    assert.doesNotMatch(replies[1] ?? '', /STARTTLS/);
    assert.match(replies[1] ?? '', /^250/);
    assert.doesNotMatch(replies[2] ?? '', /^220/);
    assert.match(replies[3] ?? '', /^250 /);
    // The other listeners still offer it.
    const offered = await rawSmtpSession(port(1), ['EHLO old-printer.test', 'QUIT']);
    assert.match(offered[1] ?? '', /STARTTLS/);
  });
});
