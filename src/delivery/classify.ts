// Classification of what nodemailer reports, by reply code and never by guessing at text.
// 2xx delivered; 5xx permanent; 4xx, network, TLS, and authentication errors temporary.
// A wrong upstream password is our problem, not the sender's: it must never bounce mail, nor
// may an ESP's "530 authentication required" (our login did not happen) or a 5xx greeting.
import type { Outcome } from './courier.js';

export interface SmtpFailure {
  code?: string;
  responseCode?: number;
  response?: string;
  command?: string;
  message: string;
}

export function outcomeOf(failure: SmtpFailure): Outcome {
  if (failure.code === 'EAUTH' || failure.code === 'ENOAUTH' || failure.code === 'NoAuth') return 'temporary';
  // Refused before the transaction (greeting, EHLO, STARTTLS, AUTH): about us, not the message.
  if (/^(CONN|EHLO|HELO|STARTTLS|AUTH)\b/i.test(failure.command ?? '')) return 'temporary';
  const code = failure.responseCode;
  if (code === 530 || code === 538) return 'temporary';
  if (code !== undefined && code >= 500 && code < 600) return 'permanent';
  return 'temporary';
}

export function describeFailure(failure: SmtpFailure): string {
  // A failed login says why in the message (e.g. the OAuth2 token endpoint's error), the reply after it.
  const raw = failure.code === 'EAUTH' ? failure.message : (failure.response ?? failure.message);
  const text = raw.replace(/\s+/g, ' ').trim();
  if (failure.code === 'EAUTH') return text;
  if (failure.responseCode !== undefined && !text.startsWith(String(failure.responseCode))) {
    return `${failure.responseCode} ${text}`;
  }
  return failure.code && !failure.responseCode ? `${failure.code}: ${text}` : text;
}

/** The enhanced status code (RFC 3463) at the start of a reply's text, e.g. "4.7.0". */
export function enhancedCode(failure: SmtpFailure): string | undefined {
  const text = failure.response ?? '';
  return /^\d{3}[ -]([245]\.\d{1,3}\.\d{1,3})\b/.exec(text)?.[1];
}

/**
 * The ESP asks us to slow down: 421 (service not available, closing), any 4.7.x (Microsoft's
 * and Google's throttling codes), or a 4xx that says so in words (SES: "454 Throttling failure:
 * Maximum sending rate exceeded").
 */
export function isThrottling(failure: SmtpFailure): boolean {
  const code = failure.responseCode;
  if (code === undefined || code < 400 || code >= 500) return false;
  if (code === 421) return true;
  if (enhancedCode(failure)?.startsWith('4.7.')) return true;
  return /throttl|rate limit|sending rate|too many (messages|connections)|try again later/i.test(
    failure.response ?? '',
  );
}

/**
 * A failure of the upstream as a whole rather than of a recipient: the connection, greeting,
 * TLS, AUTH, MAIL FROM or DATA failed for a reason that is not permanent. Such an upstream is
 * marked down for a while. (A 4xx to one RCPT only says something about that mailbox.)
 */
export function isUpstreamFailure(failure: SmtpFailure): boolean {
  if (outcomeOf(failure) !== 'temporary') return false;
  const command = (failure.command ?? '').toUpperCase();
  return !command.startsWith('RCPT');
}
