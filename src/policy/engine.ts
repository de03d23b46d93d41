// The policy stage: from the client's address and login, which source it is and whether
// this MAIL / RCPT / DATA may go ahead. Every "no" is a typed SmtpError the listener replies with.
import type { Config } from '../config/load.js';
import { SmtpError, smtpErrors } from '../smtp/errors.js';
import { SourceResolver, type Source } from './sources.js';

export interface ClientInfo {
  ip: string;
  user?: string;
}

export class PolicyEngine {
  readonly sources: SourceResolver;

  constructor(readonly config: Config) {
    this.sources = new SourceResolver(config);
  }

  /** The largest size any source may send: what the listeners advertise with SIZE. */
  maxAdvertisedSize(): number {
    const sizes = [...this.config.allowlist, ...this.config.users].map((s) => s.maxMessageSize ?? 0);
    return Math.max(this.config.limits.maxMessageSize, this.config.defaults.maxMessageSize ?? 0, ...sizes);
  }

  messageSizeLimit(source: Source): number {
    return source.policy.maxMessageSize ?? this.config.limits.maxMessageSize;
  }

  /** MAIL FROM: who is this, and may it send at all. */
  checkMail(client: ClientInfo, _sender: string, declaredSize?: number): Source {
    const source = this.sources.resolve(client.ip, client.user);
    if (!source) throw smtpErrors.notAllowed(client.ip);
    const limit = this.messageSizeLimit(source);
    if (declaredSize !== undefined && declaredSize > limit)
      throw smtpErrors.messageTooBig(limit, source.name);
    return source;
  }

  /** RCPT TO: may this source send to this recipient, as the n-th of the message. */
  checkRcpt(source: Source, _recipient: string, count: number): void {
    const max = source.policy.maxRecipients ?? this.config.limits.maxRecipients;
    if (count > max) throw smtpErrors.tooManyRecipients(max, source.name);
  }
}

export { SmtpError };
