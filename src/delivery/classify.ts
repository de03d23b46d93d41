// What a failed delivery means, decided by one pure function over the facts of the failure:
// which command failed, the reply code, the enhanced code, the text, and whether the
// connection was lost. The answer says what is affected (this recipient, this message, or the
// whole upstream) and how (temporary, permanent, or throttled: temporary, and slow down).
//
// Only a failure to connect, greet, STARTTLS or AUTH, a 421, or a lost connection is about the
// upstream: it is put aside for its back-off and the next upstream is tried. A 4xx to MAIL, RCPT
// or DATA is about that message (or recipient) only: it is retried on its own schedule while
// other messages keep flowing at full speed. A wrong upstream password never bounces mail:
// anything before the transaction (greeting, EHLO, TLS, AUTH, "530 authentication required")
// is temporary, whatever its code.
//
// Throttling is recognised by 421, by the enhanced codes ESPs use for rate limits, and by
// explicit words, never by a generic phrase like "try again later" (which every 4xx says):
//
// | signal (4xx replies only)                     | example                                                 | who                  |
// | --------------------------------------------- | ------------------------------------------------------- | -------------------- |
// | reply code 421                                | 421 4.7.0 Try again later, closing connection           | RFC 5321, Gmail      |
// | 4.7.28                                        | 421 4.7.28 ... unusual rate of unsolicited mail         | Gmail                |
// | 4.7.500 to 4.7.899                            | 451 4.7.500 Server busy. Please try again later         | Microsoft 365        |
// | any other code, with words: throttl, rate     | 454 Throttling failure: Maximum sending rate exceeded   | Amazon SES           |
// |   limit, sending rate, unusual rate, rate     | 450 4.7.0 ... unusual rate of mail                      | Gmail                |
// |   exceeded, too many (but not "too many       | 451 4.7.1 Throttling: too many messages                 | Postfix, SendGrid    |
// |   recipients", nor enhanced code 4.5.3)       |                                                         |                      |
//
// Not throttling: other 4.7.x (4.7.0 "TLS not available", 4.7.1 "Client host rejected" are
// security refusals), 452 4.5.3 "Too many recipients" (a per-transaction limit: the recipient is
// retried), any 5xx (a 5.7.1 "relaying denied" or even "550 rate limit" is a refusal, not a
// request to slow down).
import type { Outcome } from './courier.js';

/** The step of the SMTP conversation that failed. */
export type SmtpStep =
  'connect' | 'greeting' | 'ehlo' | 'starttls' | 'auth' | 'mail' | 'rcpt' | 'data' | 'local';

/** Everything the decision looks at, already taken out of the SMTP client's error. */
export interface FailureFacts {
  step: SmtpStep;
  /** The reply code; undefined when no reply came. */
  code?: number;
  /** The enhanced status code (RFC 3463) of the reply, e.g. "4.7.0". */
  enhanced?: string;
  /** The reply's text (or the error's, without a reply). */
  text: string;
  /** The connection was lost (closed, reset, timed out) instead of answering. */
  connectionLost: boolean;
}

export type Affects = 'recipient' | 'message' | 'upstream';
export type FailureKind = 'temporary' | 'permanent' | 'throttled';

export interface Decision {
  affects: Affects;
  kind: FailureKind;
}

const BEFORE_TRANSACTION = new Set<SmtpStep>(['connect', 'greeting', 'ehlo', 'starttls', 'auth']);
const RATE_WORDS =
  /throttl|rate[ -]?limit|sending rate|unusual rate|rate exceeded|too many(?! recipients| rcpt)/i;

/** The decision of the table at the top of this file. Pure. */
export function decide(facts: FailureFacts): Decision {
  const { step, code } = facts;
  if (code === 421) return { affects: 'upstream', kind: 'throttled' };
  if (facts.connectionLost) return { affects: 'upstream', kind: 'temporary' };
  const throttled = isThrottleSignal(facts);
  if (BEFORE_TRANSACTION.has(step))
    return { affects: 'upstream', kind: throttled ? 'throttled' : 'temporary' };
  // "530 authentication required", "538 encryption required": our login did not happen.
  if (step === 'mail' && (code === 530 || code === 538)) return { affects: 'upstream', kind: 'temporary' };
  const affects: Affects = step === 'rcpt' ? 'recipient' : 'message';
  if (code !== undefined && code >= 500 && code < 600) return { affects, kind: 'permanent' };
  return { affects, kind: throttled ? 'throttled' : 'temporary' };
}

/** Whether a reply asks us to slow down (the table at the top of this file). */
export function isThrottleSignal(facts: Pick<FailureFacts, 'code' | 'enhanced' | 'text'>): boolean {
  const { code, enhanced } = facts;
  if (code === undefined || code < 400 || code >= 500) return false;
  if (code === 421) return true;
  if (enhanced === '4.5.3') return false;
  if (enhanced === '4.7.28') return true;
  const microsoft = /^4\.7\.(\d{3})$/.exec(enhanced ?? '');
  if (microsoft && Number(microsoft[1]) >= 500 && Number(microsoft[1]) <= 899) return true;
  return RATE_WORDS.test(facts.text);
}

/**
 * A message not sent at all (the relay shut down while it waited for the pace): nothing about
 * the message was learned, so, like a failure of the upstream, it is not an attempt.
 */
export const NOT_SENT: Decision = { affects: 'upstream', kind: 'temporary' };

/** What a decision means for the queue: delivered is never decided here. */
export function outcomeOfDecision(decision: Decision): Outcome {
  return decision.kind === 'permanent' ? 'permanent' : 'temporary';
}

/**
 * Whether a temporary failure counts as an attempt of the message, a step along its retry
 * schedule. A failure of the upstream, or the ESP asking to slow down, is not the message's:
 * the message is retried at the same step of its schedule, and never uses up its attempts.
 */
export function chargesMessage(decision: Decision): boolean {
  return decision.affects !== 'upstream' && decision.kind !== 'throttled';
}

/** The enhanced status code (RFC 3463) at the start of a reply's text, e.g. "4.7.0". */
export function enhancedCodeOf(reply: string | undefined): string | undefined {
  return /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/.exec(reply ?? '')?.[1];
}
