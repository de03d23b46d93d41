// Self-signed certificates for tests: one key and certificate whose SubjectAltName covers the
// loopback names and addresses, so a client that trusts exactly this certificate (`ca`) can
// verify the server fully. Generation takes ~100 ms (RSA 2048), so results are cached per
// process, keyed by the host list.
import { promises as fs } from 'node:fs';
import { isIP } from 'node:net';
import path from 'node:path';
import { generate } from 'selfsigned';

export interface CertPair {
  /** Private key, PEM (PKCS#8). */
  key: string;
  /** Certificate, PEM. */
  cert: string;
}

export interface CertFiles extends CertPair {
  keyFile: string;
  certFile: string;
}

export const DEFAULT_CERT_HOSTS: readonly string[] = ['127.0.0.1', 'localhost', '::1'];

const cache = new Map<string, Promise<CertPair>>();

/**
 * A self-signed certificate valid from an hour ago for a year, with a DNS SubjectAltName for
 * each name and an IP SubjectAltName for each address in `hosts`.
 */
export function makeSelfSignedCert(hosts: readonly string[] = DEFAULT_CERT_HOSTS): Promise<CertPair> {
  const cacheKey = hosts.join(',');
  let pending = cache.get(cacheKey);
  if (!pending) {
    pending = generateCert(hosts);
    cache.set(cacheKey, pending);
    // A failed generation must not poison the cache for the rest of the run.
    pending.catch(() => cache.delete(cacheKey));
  }
  return pending;
}

export interface CertOptions {
  hosts?: readonly string[];
  /** Default: the first name in `hosts`. */
  commonName?: string;
  /** Default: an hour ago. */
  notBefore?: Date;
  /** Default: a year from now. */
  notAfter?: Date;
}

/**
 * A new certificate (never cached) with its own key: a "renewed" certificate, an expired one
 * (`notAfter` in the past), one for another name. Each call costs an RSA key generation.
 */
export function makeCert(options: CertOptions = {}): Promise<CertPair> {
  return generateCert(options.hosts ?? DEFAULT_CERT_HOSTS, options);
}

async function generateCert(hosts: readonly string[], options: CertOptions = {}): Promise<CertPair> {
  if (hosts.length === 0) throw new Error('makeSelfSignedCert: at least one host is needed');
  const names = hosts.filter((h) => isIP(h) === 0);
  const commonName = options.commonName ?? names[0] ?? hosts[0] ?? 'localhost';
  const now = Date.now();
  // selfsigned v5 is async-only; its default signature algorithm is sha1, so ask for sha256.
  const pems = await generate([{ name: 'commonName', value: commonName }], {
    keyType: 'rsa',
    keySize: 2048,
    algorithm: 'sha256',
    notBeforeDate: options.notBefore ?? new Date(now - 60 * 60 * 1000),
    notAfterDate: options.notAfter ?? new Date(now + 365 * 24 * 60 * 60 * 1000),
    extensions: [
      { name: 'basicConstraints', cA: false },
      { name: 'keyUsage', digitalSignature: true, keyEncipherment: true },
      { name: 'extKeyUsage', serverAuth: true, clientAuth: true },
      {
        name: 'subjectAltName',
        altNames: hosts.map((h) =>
          isIP(h) === 0 ? { type: 2 as const, value: h } : { type: 7 as const, ip: h },
        ),
      },
    ],
  });
  return { key: pems.private, cert: pems.cert };
}

/** Writes the (cached) certificate of `hosts` to `<dir>/key.pem` (mode 0600) and `<dir>/cert.pem`. */
export async function writeCertFiles(dir: string, hosts?: readonly string[]): Promise<CertFiles> {
  const { key, cert } = await makeSelfSignedCert(hosts);
  await fs.mkdir(dir, { recursive: true });
  const keyFile = path.join(dir, 'key.pem');
  const certFile = path.join(dir, 'cert.pem');
  await fs.writeFile(keyFile, key, { mode: 0o600 });
  await fs.writeFile(certFile, cert);
  return { keyFile, certFile, key, cert };
}
