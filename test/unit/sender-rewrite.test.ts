// Sender rewriting on parsed headers (mailsplit's Headers, as the relay's header rewriter
// hands them over): the envelope decision, From/Sender/Reply-To, display names in every
// form, and attempts to inject headers or addresses.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Headers } from 'mailsplit';
import addressparser from 'nodemailer/lib/addressparser/index.js';
import {
  formatMailbox,
  outgoingEnvelopeSender,
  parseMailboxes,
  planSender,
  type SenderRules,
} from '../../src/rewrite/sender.js';

const FIXED: SenderRules = { sender: 'scanner@corp.example', senders: { domains: ['corp.example'] } };
const DEFAULT: SenderRules = { senders: { domains: ['corp.example'], default: 'noreply@corp.example' } };

/** Runs the plan's header edit on a header block and returns the rebuilt block. */
function rewrite(head: string, envelope: string, rules: SenderRules): { out: string; from: string } {
  const headers = new Headers(Buffer.from(`${head.replace(/\n/g, '\r\n')}\r\n\r\n`, 'utf8'));
  const plan = planSender(envelope, rules);
  plan.editHeaders(headers);
  return { out: headers.build().toString('utf8'), from: plan.from };
}

/** The unfolded values of one header in a rebuilt block. */
function values(out: string, name: string): string[] {
  return out
    .replace(/\r\n(?=[ \t])/g, '')
    .split('\r\n')
    .filter((l) => l.toLowerCase().startsWith(`${name.toLowerCase()}:`))
    .map((l) => l.slice(name.length + 1).trim());
}

function mailboxes(out: string, name: string) {
  return values(out, name).flatMap((v) => parseMailboxes(`${name}: ${v}`));
}

describe('envelope sender', () => {
  test('a fixed sender always applies, even to an address in senders.domains', () => {
    assert.equal(outgoingEnvelopeSender('scan@printer.local', FIXED), 'scanner@corp.example');
    assert.equal(outgoingEnvelopeSender('alice@corp.example', FIXED), 'scanner@corp.example');
  });

  test('outside senders.domains → senders.default; inside, unchanged (any case)', () => {
    assert.equal(outgoingEnvelopeSender('bob@other.example', DEFAULT), 'noreply@corp.example');
    assert.equal(outgoingEnvelopeSender('alice@CORP.example', DEFAULT), 'alice@CORP.example');
    assert.equal(outgoingEnvelopeSender('a@sub.corp.example', DEFAULT), 'noreply@corp.example');
  });

  test('the null sender stays null', () => {
    assert.equal(outgoingEnvelopeSender('', FIXED), '');
    assert.equal(outgoingEnvelopeSender('', DEFAULT), '');
  });

  test('no rules: nothing changes', () => {
    assert.equal(outgoingEnvelopeSender('bob@other.example', {}), 'bob@other.example');
    assert.equal(
      outgoingEnvelopeSender('bob@other.example', { senders: { domains: ['corp.example'] } }),
      'bob@other.example',
    );
  });
});

describe('header From, Sender and Reply-To', () => {
  test('fixed sender: From rewritten with the display name kept, original into Reply-To', () => {
    const { out, from } = rewrite(
      'From: Scanner <scan@printer.local>\nTo: a@corp.example\nSubject: scan',
      'scan@printer.local',
      FIXED,
    );
    assert.equal(from, 'scanner@corp.example');
    assert.deepEqual(mailboxes(out, 'From'), [{ name: 'Scanner', address: 'scanner@corp.example' }]);
    assert.deepEqual(mailboxes(out, 'Reply-To'), [{ name: 'Scanner', address: 'scan@printer.local' }]);
    assert.deepEqual(values(out, 'Subject'), ['scan'], 'other headers untouched');
    assert.ok(out.indexOf('From:') < out.indexOf('To:'), 'From stays where it was');
  });

  test('an existing Reply-To is kept as it is', () => {
    const { out } = rewrite(
      'From: Scanner <scan@printer.local>\nReply-To: helpdesk@corp.example',
      'x@printer.local',
      FIXED,
    );
    assert.deepEqual(values(out, 'Reply-To'), ['helpdesk@corp.example']);
  });

  test('a sender already in senders.domains is not rewritten (no fixed sender)', () => {
    const head = 'From: "Alice A." <alice@corp.example>\nSender: bot@corp.example';
    const { out, from } = rewrite(head, 'alice@corp.example', DEFAULT);
    assert.equal(from, 'alice@corp.example');
    assert.deepEqual(values(out, 'From'), ['"Alice A." <alice@corp.example>']);
    assert.deepEqual(values(out, 'Sender'), ['bot@corp.example']);
    assert.deepEqual(values(out, 'Reply-To'), []);
  });

  test('outside senders.domains: From and Sender → senders.default', () => {
    const { out } = rewrite(
      'From: Bob <bob@other.example>\nSender: Relay Bot <bot@other.example>',
      'bob@other.example',
      DEFAULT,
    );
    assert.deepEqual(mailboxes(out, 'From'), [{ name: 'Bob', address: 'noreply@corp.example' }]);
    assert.deepEqual(mailboxes(out, 'Sender'), [{ name: 'Relay Bot', address: 'noreply@corp.example' }]);
    assert.deepEqual(mailboxes(out, 'Reply-To'), [{ name: 'Bob', address: 'bob@other.example' }]);
  });

  test('RFC 2047 encoded and folded From: the name is decoded, kept and encoded again', () => {
    const head = 'From: =?UTF-8?Q?=C3=89tage_3_=E2=80=94_MFP?=\n  <scan@printer.local>';
    const { out } = rewrite(head, 'scan@printer.local', FIXED);
    assert.ok(
      Buffer.from(out, 'utf8').every((byte) => byte < 0x80),
      'the header stays 7-bit',
    );
    const [mailbox] = mailboxes(out, 'From');
    assert.deepEqual(mailbox, { name: 'Étage 3 — MFP', address: 'scanner@corp.example' });
  });

  test('a raw UTF-8 display name (RFC 6532) is kept', () => {
    const { out } = rewrite('From: Büro Drucker <scan@printer.local>', 'scan@printer.local', FIXED);
    assert.deepEqual(mailboxes(out, 'From'), [{ name: 'Büro Drucker', address: 'scanner@corp.example' }]);
  });

  test('a From without a display name, or in the old comment form', () => {
    assert.deepEqual(values(rewrite('From: scan@printer.local', '', FIXED).out, 'From'), [
      '<scanner@corp.example>',
    ]);
    const comment = rewrite('From: scan@printer.local (Scanner)', '', FIXED).out;
    assert.deepEqual(mailboxes(comment, 'From'), [{ name: 'Scanner', address: 'scanner@corp.example' }]);
  });

  test('the null sender stays null while the header From is still rewritten', () => {
    const { out, from } = rewrite('From: Scanner <scan@printer.local>', '', FIXED);
    assert.equal(from, '');
    assert.deepEqual(mailboxes(out, 'From'), [{ name: 'Scanner', address: 'scanner@corp.example' }]);
  });

  test('a message without From gets one when the policy names a sender', () => {
    const { out } = rewrite('Subject: no from', 'scan@printer.local', FIXED);
    assert.deepEqual(values(out, 'From'), ['<scanner@corp.example>']);
    assert.deepEqual(values(out, 'Reply-To'), []);
  });

  test('several From lines or authors become the one address', () => {
    const { out } = rewrite(
      'From: a@printer.local, B <b@printer.local>\nFrom: c@evil.example',
      'a@printer.local',
      FIXED,
    );
    assert.deepEqual(mailboxes(out, 'From'), [{ name: '', address: 'scanner@corp.example' }]);
    assert.equal(values(out, 'From').length, 1);
  });
});

describe('no header or address injection', () => {
  const hostile = [
    'From: "Evil\\" <attacker@evil.example>, x" <scan@printer.local>',
    'From: =?UTF-8?Q?Evil=0D=0ABcc:_victim@evil.example?= <scan@printer.local>',
    'From: =?UTF-8?B?' +
      Buffer.from('a" <x@evil.example>, "b').toString('base64') +
      '?= <scan@printer.local>',
    'From: Evil\n Bcc: victim@evil.example <scan@printer.local>',
  ];
  for (const head of hostile) {
    test(`one From, one address: ${JSON.stringify(head).slice(0, 70)}`, () => {
      const { out } = rewrite(head, 'scan@printer.local', FIXED);
      const lines = out
        .replace(/\r\n(?=[ \t])/g, '')
        .split('\r\n')
        .filter(Boolean);
      assert.deepEqual(
        lines.map((l) => l.slice(0, l.indexOf(':')).toLowerCase()).sort(),
        ['from', 'reply-to'],
        `no new header: ${out}`,
      );
      const fromValue = values(out, 'From')[0] ?? '';
      const parsed = addressparser(fromValue, { flatten: true });
      assert.equal(parsed.length, 1, `exactly one address in ${fromValue}`);
      assert.equal(parsed[0]?.address, 'scanner@corp.example');
      const replyTo = addressparser(values(out, 'Reply-To')[0] ?? '', { flatten: true });
      assert.deepEqual(
        replyTo.map((m) => m.address),
        ['scan@printer.local'],
      );
    });
  }

  test('a Reply-To is not written from an address that is not plain', () => {
    const { out } = rewrite('From: "x@y"@printer.local', 'a@printer.local', FIXED);
    assert.deepEqual(values(out, 'Reply-To'), []);
  });

  test('formatMailbox refuses addresses that would break the header', () => {
    assert.throws(() => formatMailbox('x', 'a@b>, c@d'));
    assert.throws(() => formatMailbox('x', 'a@b\r\nBcc: c@d'));
    assert.equal(formatMailbox('a "quoted" name', 'a@b.example'), '"a \\"quoted\\" name" <a@b.example>');
  });
});
