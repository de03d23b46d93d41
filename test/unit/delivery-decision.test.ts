// The delivery decision (src/delivery/classify.ts): every row of its table, and the facts the
// nodemailer adapter takes out of nodemailer's errors (src/delivery/nodemailer-adapter.ts).
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  chargesMessage,
  decide,
  isThrottleSignal,
  type Decision,
  type FailureFacts,
  type SmtpStep,
} from '../../src/delivery/classify.js';
import { describeFailure, factsOf, smtpUtf8Refusal } from '../../src/delivery/nodemailer-adapter.js';
import { smtpUtf8Need } from '../../src/delivery/smtputf8.js';

/** Facts of a reply: "451 4.3.0 text" at `step`. */
function reply(step: SmtpStep, line: string): FailureFacts {
  const match = /^(\d{3})[ -](?:([245]\.\d{1,3}\.\d{1,3}) )?/.exec(line);
  return {
    step,
    code: match ? Number(match[1]) : undefined,
    enhanced: match?.[2],
    text: line,
    connectionLost: false,
  };
}

const lost = (step: SmtpStep): FailureFacts => ({ step, text: 'Connection closed', connectionLost: true });

const rows: [string, FailureFacts, Decision][] = [
  // The upstream itself: put aside, never a bounce.
  [
    'connection refused',
    { step: 'connect', text: 'ECONNREFUSED', connectionLost: false },
    { affects: 'upstream', kind: 'temporary' },
  ],
  ['connection timed out', lost('connect'), { affects: 'upstream', kind: 'temporary' }],
  [
    'greeting 554',
    reply('greeting', '554 5.7.1 Your IP is blocked'),
    { affects: 'upstream', kind: 'temporary' },
  ],
  ['EHLO 550', reply('ehlo', '550 5.5.1 Go away'), { affects: 'upstream', kind: 'temporary' }],
  [
    'STARTTLS 454',
    reply('starttls', '454 4.7.0 TLS not available due to local problem'),
    { affects: 'upstream', kind: 'temporary' },
  ],
  [
    'AUTH 535 (wrong password)',
    reply('auth', '535 5.7.8 Authentication credentials invalid'),
    { affects: 'upstream', kind: 'temporary' },
  ],
  [
    'AUTH without a reply (token endpoint)',
    { step: 'auth', text: 'invalid_client', connectionLost: false },
    { affects: 'upstream', kind: 'temporary' },
  ],
  [
    'MAIL 530 (our login did not happen)',
    reply('mail', '530 5.7.0 Authentication required'),
    { affects: 'upstream', kind: 'temporary' },
  ],
  ['MAIL 538', reply('mail', '538 5.7.11 Encryption required'), { affects: 'upstream', kind: 'temporary' }],
  ['connection lost during DATA', lost('data'), { affects: 'upstream', kind: 'temporary' }],
  ['connection lost at RCPT', lost('rcpt'), { affects: 'upstream', kind: 'temporary' }],
  // 421: the upstream, and slow down.
  [
    '421 at greeting',
    reply('greeting', '421 4.3.2 Service not available'),
    { affects: 'upstream', kind: 'throttled' },
  ],
  [
    '421 at DATA',
    reply('data', '421 4.7.0 Try again later, closing connection'),
    { affects: 'upstream', kind: 'throttled' },
  ],
  [
    '421 at RCPT',
    reply('rcpt', '421 4.7.28 unusual rate of unsolicited mail'),
    { affects: 'upstream', kind: 'throttled' },
  ],
  [
    'AUTH 454 with rate words',
    reply('auth', '454 4.7.0 Too many login attempts'),
    { affects: 'upstream', kind: 'throttled' },
  ],
  // One message: retried on its own schedule.
  [
    'DATA 451 try again later (Postfix)',
    reply('data', '451 4.3.0 Error: queue file write error, try again later'),
    { affects: 'message', kind: 'temporary' },
  ],
  ['MAIL 451', reply('mail', '451 4.3.0 Try later'), { affects: 'message', kind: 'temporary' }],
  [
    'DATA 450 4.7.1 security refusal',
    reply('data', '450 4.7.1 Client host rejected: cannot find your hostname'),
    { affects: 'message', kind: 'temporary' },
  ],
  ['DATA 554', reply('data', '554 5.6.0 Message rejected'), { affects: 'message', kind: 'permanent' }],
  ['MAIL 550', reply('mail', '550 5.7.1 Sender not allowed'), { affects: 'message', kind: 'permanent' }],
  [
    'DATA 5xx with rate words is still a refusal',
    reply('data', '550 5.7.1 Rate limit? no: permanent'),
    { affects: 'message', kind: 'permanent' },
  ],
  [
    'local: reading the body failed',
    { step: 'local', text: 'EIO', connectionLost: false },
    { affects: 'message', kind: 'temporary' },
  ],
  [
    'local: nodemailer over SIZE',
    { step: 'mail', text: 'Message size larger than allowed', connectionLost: false },
    { affects: 'message', kind: 'temporary' },
  ],
  // Throttled message: slow down, the message waits.
  [
    'DATA 451 4.7.1 Throttling',
    reply('data', '451 4.7.1 Throttling: too many messages'),
    { affects: 'message', kind: 'throttled' },
  ],
  [
    'DATA 454 SES',
    reply('data', '454 Throttling failure: Maximum sending rate exceeded.'),
    { affects: 'message', kind: 'throttled' },
  ],
  [
    'MAIL 451 4.7.500 Microsoft',
    reply('mail', '451 4.7.500 Server busy. Please try again later.'),
    { affects: 'message', kind: 'throttled' },
  ],
  [
    'DATA 452 4.7.850 Microsoft tenant',
    reply('data', '452 4.7.850 Tenant exceeded threshold'),
    { affects: 'message', kind: 'throttled' },
  ],
  [
    'DATA 450 4.7.28 Gmail',
    reply('data', '450 4.7.28 Our system has detected an unusual rate'),
    { affects: 'message', kind: 'throttled' },
  ],
  [
    'DATA 450 4.7.0 Gmail unusual rate',
    reply('data', '450 4.7.0 unusual rate of mail'),
    { affects: 'message', kind: 'throttled' },
  ],
  [
    'DATA 451 rate limit words',
    reply('data', '451 Rate limit exceeded, slow down'),
    { affects: 'message', kind: 'throttled' },
  ],
  // One recipient.
  [
    'RCPT 450 mailbox busy',
    reply('rcpt', '450 4.2.1 Mailbox busy'),
    { affects: 'recipient', kind: 'temporary' },
  ],
  [
    'RCPT 452 4.5.3 too many recipients',
    reply('rcpt', '452 4.5.3 Too many recipients'),
    { affects: 'recipient', kind: 'temporary' },
  ],
  ['RCPT 550', reply('rcpt', '550 5.1.1 No such user'), { affects: 'recipient', kind: 'permanent' }],
  [
    'RCPT 554 relaying denied',
    reply('rcpt', '554 5.7.1 Relaying denied'),
    { affects: 'recipient', kind: 'permanent' },
  ],
  [
    'RCPT 450 too many connections',
    reply('rcpt', '450 4.7.1 too many connections from your host'),
    { affects: 'recipient', kind: 'throttled' },
  ],
];

describe('delivery decision', () => {
  for (const [name, facts, expected] of rows) {
    test(`${name} → ${expected.affects} ${expected.kind}`, () => {
      assert.deepEqual(decide(facts), expected);
    });
  }

  test('"try again later" alone is never a throttling signal', () => {
    assert.ok(!isThrottleSignal(reply('data', '451 4.3.0 Please try again later')));
    assert.ok(!isThrottleSignal(reply('data', '450 4.7.1 Service unavailable, try again later')));
    assert.ok(!isThrottleSignal(reply('data', '451 4.7.0 Temporary server error. Please try again later')));
    assert.ok(!isThrottleSignal(reply('data', '451 4.7.499 below the Microsoft range')));
    assert.ok(!isThrottleSignal(reply('data', '451 4.7.900 above the Microsoft range')));
  });

  test('only a message’s own failures count as its attempts', () => {
    assert.ok(chargesMessage({ affects: 'message', kind: 'temporary' }));
    assert.ok(chargesMessage({ affects: 'recipient', kind: 'temporary' }));
    assert.ok(!chargesMessage({ affects: 'upstream', kind: 'temporary' }));
    assert.ok(!chargesMessage({ affects: 'message', kind: 'throttled' }));
  });
});

describe('nodemailer errors as facts', () => {
  test('each command maps to its step, a lost connection is lost', () => {
    const err = (fields: object) => factsOf({ message: 'x', ...fields });
    assert.equal(err({ code: 'ECONNECTION', command: 'CONN' }).step, 'connect');
    assert.equal(err({ code: 'ECONNECTION', command: 'CONN' }).connectionLost, true);
    assert.equal(err({ code: 'ETIMEDOUT', command: 'CONN' }).connectionLost, true);
    assert.equal(
      err({ code: 'EPROTOCOL', command: 'CONN', responseCode: 554, response: '554 no' }).step,
      'greeting',
    );
    assert.equal(err({ code: 'ETLS', command: 'CONN' }).step, 'starttls');
    assert.equal(err({ code: 'EAUTH', command: 'AUTH PLAIN', responseCode: 535 }).step, 'auth');
    assert.equal(err({ code: 'EENVELOPE', command: 'MAIL FROM', responseCode: 451 }).step, 'mail');
    assert.equal(err({ code: 'EENVELOPE', command: 'RCPT TO', responseCode: 450 }).step, 'rcpt');
    const data = err({
      code: 'EMESSAGE',
      command: 'DATA',
      responseCode: 451,
      response: '451 4.7.1 Throttling',
    });
    assert.deepEqual(data, {
      step: 'data',
      code: 451,
      enhanced: '4.7.1',
      text: '451 4.7.1 Throttling',
      connectionLost: false,
    });
    assert.equal(err({ code: 'ESTREAM', command: 'API' }).step, 'local');
  });
});

describe('SMTPUTF8 not offered', () => {
  test('the refusal is a permanent failure of the message, status 5.6.7, saying why', () => {
    const refusal = smtpUtf8Refusal('the message has non-ASCII addresses');
    const facts = factsOf(refusal);
    assert.equal(facts.enhanced, '5.6.7');
    assert.deepEqual(decide(facts), { affects: 'message', kind: 'permanent' });
    assert.equal(
      describeFailure(refusal),
      '553 5.6.7 the upstream does not support SMTPUTF8; the message has non-ASCII addresses',
    );
  });

  test('what needs it: a non-ASCII local part or header byte; a non-ASCII domain alone does not', () => {
    const head = (text: string) => () => Buffer.from(text, 'utf8');
    const ascii = head('Subject: hi\r\n');
    const entry = (smtpUtf8: boolean, from = 'app@corp.example') => ({ smtpUtf8, from });
    assert.equal(smtpUtf8Need(entry(false), ['josé@example.com'], ascii), undefined, 'not asked for');
    assert.deepEqual(smtpUtf8Need(entry(true), ['josé@example.com'], ascii), {
      need: 'required',
      reason: 'the message has non-ASCII addresses',
    });
    assert.equal(smtpUtf8Need(entry(true, 'zoë@corp.example'), ['a@example.com'], ascii)?.need, 'required');
    assert.deepEqual(smtpUtf8Need(entry(true), ['a@bücher.example'], ascii), { need: 'requested' });
    assert.deepEqual(smtpUtf8Need(entry(true), ['a@example.com'], head('Subject: Grüße\r\n')), {
      need: 'required',
      reason: 'the message has non-ASCII header fields',
    });
  });
});
