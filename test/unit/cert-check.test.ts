// The checks a certificate pair passes before it is served (src/smtp/cert-check.ts): whatever
// lands in the files (a half-written renewal, the wrong file, binary junk), the answer is a
// CertificateProblem naming the file, never a crash and never the key's text.
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import {
  CertificateProblem,
  checkCertificateFiles,
  describeExpiry,
  inspectPair,
} from '../../src/smtp/cert-check.js';
import { makeCert, makeSelfSignedCert } from '../helpers/certs.js';

const files = { cert: '/etc/tls/cert.pem', key: '/etc/tls/key.pem' };

function problem(pair: { cert: string; key: string }, options = {}): CertificateProblem {
  try {
    inspectPair(pair, files, options);
  } catch (err) {
    assert.ok(err instanceof CertificateProblem, `not a CertificateProblem: ${String(err)}`);
    return err;
  }
  assert.fail('the pair was accepted');
}

describe('inspectPair', () => {
  test('a good pair: subject, expiry and fingerprint', async () => {
    const pair = await makeSelfSignedCert();
    const info = inspectPair(pair, files);
    assert.match(info.subject, /CN=localhost/);
    assert.ok(info.notAfter > Date.now());
    assert.match(info.fingerprint, /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
    assert.match(describeExpiry(info), /^expires \d{4}-\d\d-\d\d \(in 36[45] days\)$/);
  });

  test('junk of every kind is refused with the file at fault', async () => {
    const good = await makeSelfSignedCert();
    const other = await makeCert({ commonName: 'other.test' });
    const half = good.cert.slice(0, good.cert.length / 2);
    const cases: [string, { cert: string; key: string }, string, RegExp][] = [
      ['empty files', { cert: '', key: '' }, files.cert, /not a certificate/],
      [
        'binary junk',
        { cert: randomBytes(4096).toString('latin1'), key: good.key },
        files.cert,
        /not a certificate/,
      ],
      ['half-written cert', { cert: half, key: good.key }, files.cert, /not a certificate/],
      [
        'PEM armour around junk',
        {
          cert: `-----BEGIN CERTIFICATE-----\n${randomBytes(300).toString('base64')}\n-----END CERTIFICATE-----\n`,
          key: good.key,
        },
        files.cert,
        /not a certificate/,
      ],
      ['the key in both', { cert: good.key, key: good.key }, files.cert, /not a certificate/],
      ['the cert in both', { cert: good.cert, key: good.cert }, files.key, /not a private key/],
      ['swapped', { cert: good.key, key: good.cert }, files.cert, /not a certificate/],
      ['a key of another certificate', { cert: good.cert, key: other.key }, files.key, /does not belong/],
      ['a huge file', { cert: 'A'.repeat(5_000_000), key: good.key }, files.cert, /not a certificate/],
    ];
    for (const [name, pair, file, reason] of cases) {
      const err = problem(pair);
      assert.equal(err.file, file, name);
      assert.match(err.reason, reason, name);
      assert.doesNotMatch(err.message, /PRIVATE KEY|MII/, `${name}: no key material in the message`);
    }
  });

  test('expired: described, refused only when asked', async () => {
    const expired = await makeCert({
      notBefore: new Date(Date.now() - 10 * 86_400_000),
      notAfter: new Date(Date.now() - 86_400_000),
    });
    assert.match(describeExpiry(inspectPair(expired, files)), /^expired on /);
    assert.match(problem(expired, { refuseExpired: true }).reason, /expired on/);
  });
});

describe('checkCertificateFiles', () => {
  test('no tls: nothing to say; missing files: one error naming the file', () => {
    assert.deepEqual(checkCertificateFiles(undefined), []);
    const findings = checkCertificateFiles({ cert: '/nonexistent/cert.pem', key: '/nonexistent/key.pem' });
    assert.equal(findings.length, 1);
    assert.equal(findings[0]?.level, 'error');
    assert.match(
      findings[0]?.message ?? '',
      /\/nonexistent\/cert\.pem: the certificate \(tls\.cert\) does not exist/,
    );
  });
});
