// The certificate the listeners present and how they speak TLS. The certificate: an admin's
// own (tls.cert/tls.key) when configured; otherwise one made for this installation on first
// start and kept in the spool's tls/ folder, so every relay has its own key rather than a
// well-known built-in one. The suites: Mozilla's "intermediate" profile (forward-secret AEAD
// only) unless the listener opted into TLS 1.0/1.1 for old devices; no client-initiated
// renegotiation (TLS 1.2), which only costs the server CPU and has had its attacks.
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import path from 'node:path';
import selfsigned from 'selfsigned';
import type tls from 'node:tls';
import type { Config, ListenerConfig } from '../config/load.js';
import type { Logger } from '../log.js';

export interface KeyPair {
  key: string;
  cert: string;
}

/**
 * Mozilla's "intermediate" server profile (v5.7): the TLS 1.3 suites, then ECDHE with AES-GCM or
 * ChaCha20-Poly1305 for TLS 1.2. (Its DHE suites are left out: no finite-field groups here.)
 */
export const INTERMEDIATE_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':');

/** What a listener was opted into for devices that cannot do better: OpenSSL's defaults, any level. */
export const LEGACY_CIPHERS = 'DEFAULT:@SECLEVEL=0';

/** The TLS options of one listener (smtp-server passes them on to Node's TLS). */
export function listenerTlsOptions(
  listen: ListenerConfig,
  keyPair: KeyPair | undefined,
): Pick<tls.SecureContextOptions, 'key' | 'cert' | 'ciphers' | 'minVersion' | 'honorCipherOrder'> {
  const legacy = listen.tls.minVersion === 'TLSv1' || listen.tls.minVersion === 'TLSv1.1';
  return {
    ...(keyPair ? { key: keyPair.key, cert: keyPair.cert } : {}),
    minVersion: listen.tls.minVersion,
    // OpenSSL 3 refuses TLS 1.0/1.1 at its default security level; lower it for this listener
    // only, which the admin opted into for old printers.
    ciphers: legacy ? LEGACY_CIPHERS : INTERMEDIATE_CIPHERS,
    // As Mozilla's profile says: every suite offered is strong, so the client picks.
    honorCipherOrder: false,
  };
}

/** Once a session is secure: a TLS 1.2 client may not renegotiate (TLS 1.3 has no renegotiation). */
export function refuseRenegotiation(socket: unknown): void {
  const secure = socket as Partial<tls.TLSSocket>;
  if (typeof secure.disableRenegotiation === 'function') secure.disableRenegotiation();
}

export async function listenerCertificate(config: Config, log: Logger): Promise<KeyPair | undefined> {
  if (config.tls) {
    return { key: await readFile(config.tls.key, 'utf8'), cert: await readFile(config.tls.cert, 'utf8') };
  }
  const needed = config.listen.some((l) => l.implicitTls || l.starttls || l.requireTls);
  if (!needed) return undefined;
  const dir = path.join(config.spool.dir, 'tls');
  const keyFile = path.join(dir, 'selfsigned.key');
  const certFile = path.join(dir, 'selfsigned.crt');
  if (existsSync(keyFile) && existsSync(certFile)) {
    return { key: await readFile(keyFile, 'utf8'), cert: await readFile(certFile, 'utf8') };
  }
  const pair = await makeSelfSigned(config.hostname);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  await writeFile(keyFile, pair.key, { mode: 0o600 });
  await writeFile(certFile, pair.cert, { mode: 0o644 });
  log.warn('no tls.cert/tls.key configured: made a self-signed certificate', {
    event: 'tls_selfsigned',
    certFile,
  });
  return pair;
}

export async function makeSelfSigned(hostname: string): Promise<KeyPair> {
  const altNames = [{ type: 2 as const, value: hostname }];
  if (isIP(hostname)) altNames.push({ type: 7 as const, ip: hostname } as never);
  const now = new Date();
  const pems = await selfsigned.generate([{ name: 'commonName', value: hostname }], {
    keySize: 2048, // RSA: old printers' TLS stacks know nothing else
    algorithm: 'sha256',
    notBeforeDate: new Date(now.getTime() - 86_400_000),
    notAfterDate: new Date(now.getTime() + 10 * 365 * 86_400_000),
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true },
      { name: 'subjectAltName', altNames },
    ],
  });
  return { key: pems.private, cert: pems.cert };
}
