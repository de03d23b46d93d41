// Classification of what nodemailer reports, by reply code and never by guessing at text.
// 2xx delivered; 5xx permanent; 4xx, network, TLS, and authentication errors temporary.
// A wrong upstream password is our problem, not the sender's: it must never bounce mail.
import type { Outcome } from './courier.js';

export interface SmtpFailure {
  code?: string;
  responseCode?: number;
  response?: string;
  command?: string;
  message: string;
}

export function outcomeOf(failure: SmtpFailure): Outcome {
  if (failure.code === 'EAUTH' || failure.code === 'ENOAUTH') return 'temporary';
  const code = failure.responseCode;
  if (code !== undefined && code >= 500 && code < 600) return 'permanent';
  return 'temporary';
}

export function describeFailure(failure: SmtpFailure): string {
  const text = (failure.response ?? failure.message).replace(/\s+/g, ' ').trim();
  if (failure.responseCode !== undefined && !text.startsWith(String(failure.responseCode))) {
    return `${failure.responseCode} ${text}`;
  }
  return failure.code && !failure.responseCode ? `${failure.code}: ${text}` : text;
}
