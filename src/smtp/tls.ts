// The certificate the listeners present. An admin's own (tls.cert/tls.key) when configured;
// otherwise one made for this installation on first start and kept in the spool's tls/
// folder, so every relay has its own key rather than a well-known built-in one.
import { existsSync } from 'node:fs';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import path from 'node:path';
import selfsigned from 'selfsigned';
import type { Config } from '../config/load.js';
import type { Logger } from '../log.js';

export interface KeyPair {
  key: string;
  cert: string;
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
