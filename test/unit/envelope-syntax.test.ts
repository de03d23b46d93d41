// The MAIL FROM / RCPT TO path as written: brackets or none, quoted local parts with spaces,
// and hostile lines (unclosed quotes and brackets, huge input, escapes at the very end).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { quotedLocalPart, readCommandPath, readPath } from '../../src/smtp/envelope-syntax.js';
import { loggableUsername } from '../../src/smtp/auth.js';

describe('envelope syntax', () => {
  test('bracketed, bare, null sender, parameters kept apart', () => {
    assert.deepEqual(readPath('<a@b.example> SIZE=10'), {
      path: 'a@b.example',
      bracketed: true,
      rest: 'SIZE=10',
    });
    assert.deepEqual(readPath(' a@b.example  BODY=8BITMIME'), {
      path: 'a@b.example',
      bracketed: false,
      rest: 'BODY=8BITMIME',
    });
    assert.deepEqual(readPath('<>'), { path: '', bracketed: true, rest: '' });
    assert.deepEqual(readPath('postmaster'), { path: 'postmaster', bracketed: false, rest: '' });
  });

  test('quoted local parts hold spaces, brackets, @ and escaped quotes', () => {
    assert.equal(readPath('<"john doe"@corp.example> NOTIFY=NEVER')?.path, '"john doe"@corp.example');
    assert.equal(readPath('<"a>b"@corp.example>')?.path, '"a>b"@corp.example');
    assert.equal(readPath('"x \\" y"@corp.example SIZE=1')?.path, '"x \\" y"@corp.example');
    assert.deepEqual(quotedLocalPart('"john doe"@corp.example'), {
      local: '"john doe"',
      domain: 'corp.example',
    });
    assert.equal(quotedLocalPart('john@corp.example'), undefined);
    assert.equal(quotedLocalPart('"john"corp.example'), undefined);
  });

  test('hostile: nothing readable is undefined, never a guess', () => {
    for (const bad of [
      '',
      '   ',
      '<a@b.example',
      '<"unclosed@b.example>',
      '"unclosed@b.example',
      '<a@b.example>SIZE=1',
      '<<a@b.example>>',
      'a<b@c.example',
      '"\\',
      '<"\\">',
      'x'.repeat(70 * 1024),
    ]) {
      assert.equal(readPath(bad), undefined, JSON.stringify(bad.slice(0, 40)));
    }
    assert.equal(readCommandPath('MAIL FROM', 'RCPT TO:<a@b.example>'), undefined);
    assert.equal(readCommandPath('MAIL FROM', 'MAIL FROM <a@b.example>'), undefined);
    assert.equal(readCommandPath('RCPT TO', 'rcpt to : <a@b.example>')?.path, 'a@b.example');
  });

  test('a failed username in the log: cut to 64 characters, control characters escaped', () => {
    assert.equal(loggableUsername('crm'), 'crm');
    assert.equal(loggableUsername('a\r\nevent=auth ok\x00'), 'a\\x0d\\x0aevent=auth ok\\x00');
    const long = loggableUsername('u'.repeat(10_000));
    assert.ok(long.startsWith('u'.repeat(64) + '...'));
    assert.match(long, /\(10000 characters\)$/);
    assert.ok(long.length < 100);
  });
});
