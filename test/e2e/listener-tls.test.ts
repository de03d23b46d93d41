// TLS defaults through the real relay (issue 13, point 7): a default listener offers only
// forward-secret AEAD suites (Mozilla "intermediate") and refuses client-initiated
// renegotiation; a listener opted into TLS 1.0/1.1 for old devices keeps its weaker suites.
import assert from 'node:assert/strict';
import net from 'node:net';
import tls from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { freePort, startRelay, type Relay } from '../helpers/relay.js';

type Handshake =
  { ok: true; socket: tls.TLSSocket; cipher: string; version: string } | { ok: false; error: string };

/** EHLO, STARTTLS, then a TLS handshake with `options`; the socket is left open on success. */
function starttls(port: number, options: tls.ConnectionOptions): Promise<Handshake> {
  return new Promise((resolve) => {
    const plain = net.connect({ host: '127.0.0.1', port });
    let buffer = '';
    let stage = 0;
    plain.on('error', (err) => resolve({ ok: false, error: err.message }));
    plain.on('data', (chunk: Buffer) => {
      buffer += chunk.toString('latin1');
      if (stage === 0 && /^220 .*\r\n/.test(buffer)) {
        stage = 1;
        plain.write('EHLO client.test\r\n');
      } else if (stage === 1 && /\r\n250 [^\r\n]*\r\n$/.test(buffer)) {
        stage = 2;
        plain.write('STARTTLS\r\n');
      } else if (stage === 2 && /\r\n220 [^\r\n]*\r\n$/.test(buffer)) {
        stage = 3;
        plain.removeAllListeners('data');
        const secure = tls.connect({ socket: plain, rejectUnauthorized: false, ...options });
        secure.once('secureConnect', () =>
          resolve({
            ok: true,
            socket: secure,
            cipher: secure.getCipher().name,
            version: secure.getProtocol() ?? '',
          }),
        );
        secure.once('error', (err) => resolve({ ok: false, error: err.message }));
      }
    });
  });
}

describe('listener: TLS defaults', () => {
  let relay: Relay;
  let legacyPort: number;

  before(async () => {
    legacyPort = await freePort();
    relay = await startRelay({
      config: {
        listen: [
          { host: '127.0.0.1' },
          { host: '127.0.0.1', port: legacyPort, tls: { minVersion: 'TLSv1' } },
        ],
        allowlist: [{ cidr: '127.0.0.1/32', name: 'printer' }],
      },
    });
  });

  after(async () => {
    await relay?.stop();
  });

  test('TLS 1.3 and TLS 1.2 with ECDHE + AES-GCM or ChaCha20 are taken', async () => {
    for (const options of [
      {},
      { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-AES128-GCM-SHA256' },
      { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-AES256-GCM-SHA384' },
      { maxVersion: 'TLSv1.2', ciphers: 'ECDHE-RSA-CHACHA20-POLY1305' },
    ] as tls.ConnectionOptions[]) {
      const result = await starttls(relay.port, options);
      assert.ok(result.ok, `${JSON.stringify(options)}: ${result.ok ? '' : result.error}`);
      result.socket.destroy();
    }
  });

  test('no suite without forward secrecy or AEAD: static RSA and CBC suites are refused', async () => {
    for (const ciphers of ['AES128-SHA', 'AES256-GCM-SHA384', 'ECDHE-RSA-AES128-SHA']) {
      const result = await starttls(relay.port, { maxVersion: 'TLSv1.2', ciphers });
      if (result.ok) result.socket.destroy();
      assert.equal(result.ok, false, `${ciphers} was negotiated`);
    }
  });

  test('a TLS 1.2 client may not renegotiate', async () => {
    const result = await starttls(relay.port, { maxVersion: 'TLSv1.2' });
    assert.ok(result.ok, result.ok ? '' : result.error);
    const socket = result.socket;
    socket.on('error', () => undefined);
    const outcome = await new Promise<string>((resolve) => {
      socket.once('close', () => resolve('closed'));
      const started = socket.renegotiate({ rejectUnauthorized: false }, (err) =>
        resolve(err ? `refused: ${err.message}` : 'renegotiated'),
      );
      if (!started) resolve('refused locally');
    });
    socket.destroy();
    assert.notEqual(outcome, 'renegotiated');
  });

  test('a listener opted into TLSv1 for old devices keeps the weaker suites', async () => {
    const result = await starttls(legacyPort, { maxVersion: 'TLSv1.2', ciphers: 'AES128-SHA:@SECLEVEL=0' });
    assert.ok(result.ok, result.ok ? '' : result.error);
    assert.equal(result.cipher, 'AES128-SHA');
    result.socket.destroy();
  });
});
