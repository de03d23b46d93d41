// Whether a certificate and key make a pair the listeners can serve: both readable, both PEM
// that OpenSSL takes, the key the certificate's own, and the certificate in its validity period.
// Used at start, on every reload (cert-reload.ts) and by `smarthost check-config`. A reason
// names the file and what is wrong with it, never the key's contents.
import { createPrivateKey, X509Certificate } from 'node:crypto';
import { readFileSync } from 'node:fs';
import tls from 'node:tls';
import type { KeyPair } from './tls.js';

/** Where a pair was read from (absent: made by the relay, in memory). */
export interface PairFiles {
  cert: string;
  key: string;
}

/** What the logs, the metric and check-config say about a good pair. */
export interface PairInfo {
  subject: string;
  /** The end of the validity period, ms since the epoch. */
  notAfter: number;
  notBefore: number;
  /** SHA-256 fingerprint, as openssl prints it (AB:CD:...). */
  fingerprint: string;
}

/** Expiring within this is worth a warning: certbot renews 30 days ahead, so 14 means it did not. */
export const EXPIRY_WARNING_MS = 14 * 86_400_000;

/** A pair that cannot be served; `file` is the one at fault. */
export class CertificateProblem extends Error {
  constructor(
    readonly file: string,
    readonly reason: string,
  ) {
    super(`${file}: ${reason}`);
    this.name = 'CertificateProblem';
  }
}

/** OpenSSL's errors name the routine ("error:1E08010C:DECODER routines::unsupported"): keep the words. */
function opensslWords(err: unknown): string {
  const message = (err as Error).message ?? String(err);
  return message.replace(/^error:[0-9A-F]+:/i, '').trim();
}

/** Reads both files; throws a CertificateProblem naming the one that cannot be read. */
export function readPairFiles(files: PairFiles): KeyPair {
  const read = (file: string, what: string): string => {
    try {
      return readFileSync(file, 'utf8');
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      const why =
        code === 'ENOENT'
          ? 'does not exist'
          : code === 'EACCES'
            ? `cannot be read by uid ${process.getuid?.() ?? '?'} (permission denied)`
            : code === 'EISDIR'
              ? 'is a folder, not a file'
              : (err as Error).message;
      throw new CertificateProblem(file, `the ${what} ${why}`);
    }
  };
  return { cert: read(files.cert, 'certificate (tls.cert)'), key: read(files.key, 'private key (tls.key)') };
}

/**
 * Checks that `pair` can be served, and describes its certificate (the first one in the file:
 * the server's own, the chain follows it). `now` decides "expired"; an expired certificate is
 * a problem only when `refuseExpired`.
 */
export function inspectPair(
  pair: KeyPair,
  files: PairFiles = { cert: '(certificate)', key: '(private key)' },
  options: { now?: number; refuseExpired?: boolean } = {},
): PairInfo {
  let x509: X509Certificate;
  try {
    if (!pair.cert.includes('-----BEGIN CERTIFICATE-----')) throw new Error('no PEM certificate in it');
    x509 = new X509Certificate(pair.cert);
  } catch (err) {
    throw new CertificateProblem(files.cert, `not a certificate OpenSSL can read: ${opensslWords(err)}`);
  }
  let key: ReturnType<typeof createPrivateKey>;
  try {
    if (!/-----BEGIN [A-Z ]*PRIVATE KEY-----/.test(pair.key)) throw new Error('no PEM private key in it');
    key = createPrivateKey(pair.key);
  } catch (err) {
    throw new CertificateProblem(files.key, `not a private key OpenSSL can read: ${opensslWords(err)}`);
  }
  if (!x509.checkPrivateKey(key)) {
    throw new CertificateProblem(
      files.key,
      `this private key does not belong to the certificate ${files.cert} (a key from another renewal, or the files swapped?)`,
    );
  }
  const info: PairInfo = {
    subject: x509.subject.replace(/\n/g, ', '),
    notAfter: Date.parse(x509.validTo),
    notBefore: Date.parse(x509.validFrom),
    fingerprint: x509.fingerprint256,
  };
  const now = options.now ?? Date.now();
  if (options.refuseExpired && info.notAfter <= now) {
    throw new CertificateProblem(
      files.cert,
      `the certificate expired on ${new Date(info.notAfter).toISOString()}`,
    );
  }
  try {
    // What the listener will build from it: catches what the checks above do not (a key too
    // weak for OpenSSL's security level, an unsupported algorithm).
    tls.createSecureContext({ key: pair.key, cert: pair.cert });
  } catch (err) {
    throw new CertificateProblem(files.cert, `TLS cannot use this pair: ${opensslWords(err)}`);
  }
  return info;
}

/** "expires 2026-03-01 (in 12 days)" and the like, for logs and check-config. */
export function describeExpiry(info: PairInfo, now = Date.now()): string {
  const date = new Date(info.notAfter).toISOString().slice(0, 10);
  const days = Math.floor((info.notAfter - now) / 86_400_000);
  if (info.notAfter <= now) return `expired on ${date}`;
  return `expires ${date} (in ${days} day${days === 1 ? '' : 's'})`;
}

export interface CertificateFinding {
  level: 'error' | 'warning';
  message: string;
}

/** What `check-config` says about the configured pair (none when `tls:` is not set). */
export function checkCertificateFiles(files: PairFiles | undefined, now = Date.now()): CertificateFinding[] {
  if (!files) return [];
  let info: PairInfo;
  try {
    info = inspectPair(readPairFiles(files), files, { now });
  } catch (err) {
    if (err instanceof CertificateProblem) return [{ level: 'error', message: `tls: ${err.message}` }];
    throw err;
  }
  const expiry = describeExpiry(info, now);
  if (info.notAfter <= now) {
    return [{ level: 'error', message: `tls: ${files.cert}: the certificate ${expiry}; renew it` }];
  }
  if (info.notBefore > now) {
    return [
      {
        level: 'error',
        message: `tls: ${files.cert}: the certificate is not valid before ${new Date(info.notBefore).toISOString()}`,
      },
    ];
  }
  if (info.notAfter - now < EXPIRY_WARNING_MS) {
    return [
      { level: 'warning', message: `tls: ${files.cert}: the certificate ${expiry}; is renewal running?` },
    ];
  }
  return [];
}
