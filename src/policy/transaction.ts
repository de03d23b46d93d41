// One mail transaction as the policy sees it: `PolicyEngine.begin()` at MAIL FROM, then
// `mail()`, `rcpt()` for each recipient and `receive()` before DATA is read. The listener maps
// smtp-server's callbacks to these; every decision (who is sending, what it may send, where a
// recipient goes, how large the message may be, how its sender is rewritten) is made here.
import { smtpErrors, type SmtpError } from '../smtp/errors.js';
import { planSender, type SenderPlan } from '../rewrite/sender.js';
import type { PolicyEngine } from './engine.js';
import { normaliseIp, type Source } from './sources.js';

/** What the listener knows about the session when a transaction begins. */
export interface SessionFacts {
  ip: string;
  /** The user it logged in as, if it did. */
  user?: string;
  tls: boolean;
}

/** MAIL FROM as the listener read it. */
export interface MailCommand {
  address: string;
  /** SIZE= as declared. */
  declaredSize?: number;
  /** A routing form or malformed address, in words: refused (553) once the sender is known. */
  routingProblem?: string;
  /** A bad parameter: refused with this once the sender is known. */
  parameterProblem?: SmtpError;
}

/** RCPT TO as the listener read it; `count` makes this the n-th recipient. */
export interface RcptCommand {
  address: string;
  count: number;
  routingProblem?: string;
  parameterProblem?: SmtpError;
}

/** What DATA needs: the sender that leaves, its header edits, and the size limit. */
export interface ReceivePlan {
  source: Source;
  originalFrom: string;
  sender: SenderPlan;
  sizeLimit: number;
  sizeError: () => SmtpError;
}

export class PolicyTransaction {
  private from: string | undefined;
  /** Set once MAIL FROM is accepted. */
  source: Source | undefined;

  constructor(
    private readonly engine: PolicyEngine,
    readonly facts: SessionFacts,
  ) {}

  /** The source a refusal counts against (whether or not MAIL was accepted). */
  get sourceName(): string | undefined {
    return (this.source ?? this.engine.sources.resolve(this.facts.ip, this.facts.user))?.name;
  }

  /**
   * MAIL FROM: who is sending, and may it send this, now. Rejects with the refusal.
   * Asynchronous for cluster mode: the rate limit may be a Redis round trip (src/cluster/).
   */
  async mail(command: MailCommand): Promise<Source> {
    const { ip, user } = this.facts;
    // Who may send comes first: a stranger learns nothing about address syntax.
    if (command.routingProblem || command.parameterProblem) {
      if (!this.engine.sources.resolve(ip, user)) throw smtpErrors.notAllowed(normaliseIp(ip));
      if (command.routingProblem) throw smtpErrors.badAddress(command.address, command.routingProblem);
      throw command.parameterProblem!;
    }
    this.source = await this.engine.checkMail({ ip, user }, command.address, command.declaredSize);
    this.from = command.address;
    return this.source;
  }

  /**
   * RCPT TO: may this recipient be added; returns where it is delivered (the address itself, or
   * bounces.to for the postmaster). Rejects with the refusal.
   */
  async rcpt(command: RcptCommand): Promise<string> {
    const source = this.source;
    if (!source) throw smtpErrors.notAllowed(normaliseIp(this.facts.ip));
    if (command.parameterProblem) throw command.parameterProblem;
    // RFC 5321 4.5.1: "postmaster" (no domain) and postmaster at our own name are accepted.
    if (isPostmaster(command.address, this.engine.config.hostname)) {
      const to = this.engine.config.bounces.to;
      if (!to) throw smtpErrors.noPostmaster();
      await this.engine.checkRcpt(source, to, command.count, true);
      return to;
    }
    if (command.routingProblem) throw smtpErrors.badAddress(command.address, command.routingProblem);
    await this.engine.checkRcpt(source, command.address, command.count);
    return command.address;
  }

  /** Before DATA is read: the sender plan and size limit. Throws when MAIL was never accepted. */
  receive(): ReceivePlan {
    const source = this.source;
    if (!source) throw smtpErrors.notAllowed(normaliseIp(this.facts.ip));
    const from = this.from ?? '';
    const sender = planSender(from, source.policy);
    const sizeLimit = Math.min(
      this.engine.messageSizeLimit(source, sender.from),
      this.engine.maxAdvertisedSize,
    );
    return {
      source,
      originalFrom: from,
      sender,
      sizeLimit,
      sizeError: () => this.engine.sizeError(source, sizeLimit, sender.from),
    };
  }
}

/** `postmaster`, or `postmaster@` the relay's hostname (any case). */
export function isPostmaster(address: string, hostname: string): boolean {
  const lower = address.toLowerCase();
  return lower === 'postmaster' || lower === `postmaster@${hostname.toLowerCase()}`;
}
