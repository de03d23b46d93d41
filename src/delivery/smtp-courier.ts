// Delivery to the ESP with nodemailer's pooled SMTP transport: STARTTLS required and the
// certificate verified unless configured otherwise, AUTH, the stored envelope given
// explicitly and the raw message streamed from the spool unchanged (never re-encoded).
import { createReadStream, readFileSync } from 'node:fs';
import nodemailer, { type Transporter } from 'nodemailer';
import type SMTPPool from 'nodemailer/lib/smtp-pool/index.js';
import type { Upstream } from '../config/load.js';
import type { QueueEntry } from '../spool/entry.js';
import type { Courier, RecipientResult } from './courier.js';
import { describeFailure, outcomeOf, type SmtpFailure } from './classify.js';

export function transportOptions(upstream: Upstream, hostname: string): SMTPPool.Options {
  return {
    pool: true,
    host: upstream.host,
    port: upstream.port,
    secure: upstream.tls === 'implicit',
    requireTLS: upstream.tls === 'starttls',
    ignoreTLS: upstream.tls === 'none',
    name: hostname,
    auth: upstream.user ? { user: upstream.user, pass: upstream.pass ?? '' } : undefined,
    tls: {
      rejectUnauthorized: true,
      minVersion: 'TLSv1.2',
      ca: upstream.ca ? [readFileSync(upstream.ca, 'utf8')] : undefined,
    },
    maxConnections: upstream.maxConnections,
    maxMessages: 1000,
    connectionTimeout: upstream.timeout,
    greetingTimeout: Math.min(upstream.timeout, 30_000),
    socketTimeout: upstream.timeout,
    logger: false,
  };
}

/** One upstream ESP reached through one pool of connections. */
export class UpstreamClient {
  private readonly transport: Transporter<SMTPPool.SentMessageInfo>;

  constructor(
    readonly upstream: Upstream,
    hostname: string,
  ) {
    this.transport = nodemailer.createTransport(transportOptions(upstream, hostname));
  }

  async send(entry: QueueEntry, recipients: string[], bodyPath: string): Promise<RecipientResult[]> {
    const upstream = this.upstream.name;
    try {
      const info = await this.transport.sendMail({
        envelope: { from: entry.from, to: recipients },
        raw: createReadStream(bodyPath),
      });
      const rejected = new Map<string, SmtpFailure>();
      for (const err of (info as { rejectedErrors?: (SmtpFailure & { recipient: string })[] })
        .rejectedErrors ?? []) {
        rejected.set(err.recipient, err);
      }
      return recipients.map((recipient) => {
        const failure = rejected.get(recipient);
        if (failure)
          return { recipient, outcome: outcomeOf(failure), reply: describeFailure(failure), upstream };
        return { recipient, outcome: 'delivered' as const, reply: info.response, upstream };
      });
    } catch (error) {
      const err = error as SmtpFailure & { rejectedErrors?: (SmtpFailure & { recipient: string })[] };
      // All recipients refused at RCPT: each has its own reply.
      const perRecipient = new Map((err.rejectedErrors ?? []).map((e) => [e.recipient, e]));
      return recipients.map((recipient) => {
        const failure = perRecipient.get(recipient) ?? err;
        return { recipient, outcome: outcomeOf(failure), reply: describeFailure(failure), upstream };
      });
    }
  }

  verify(): Promise<true> {
    return this.transport.verify();
  }

  close(): void {
    this.transport.close();
  }
}

/**
 * Upstreams in order: a temporary failure (connection refused, 4xx) moves the recipients it
 * hit on to the next upstream; a permanent one is final.
 */
export class SmtpCourier implements Courier {
  readonly description: string;
  private readonly clients: UpstreamClient[];

  constructor(upstreams: Upstream[], hostname: string) {
    this.clients = upstreams.map((u) => new UpstreamClient(u, hostname));
    this.description = `delivering to ${upstreams.map((u) => `${u.name} (${u.tls})`).join(', then ')}`;
  }

  async send(entry: QueueEntry, recipients: string[], bodyPath: string): Promise<RecipientResult[]> {
    const senderDomain = entry.from.split('@').pop()?.toLowerCase() ?? '';
    const eligible = this.clients.filter(
      (c) => c.upstream.senderDomains.length === 0 || c.upstream.senderDomains.includes(senderDomain),
    );
    const candidates = eligible.length ? eligible : this.clients;
    const final = new Map<string, RecipientResult>();
    let remaining = recipients;
    for (const client of candidates) {
      const results = await client.send(entry, remaining, bodyPath);
      for (const result of results) final.set(result.recipient, result);
      remaining = results.filter((r) => r.outcome === 'temporary').map((r) => r.recipient);
      if (remaining.length === 0) break;
    }
    return recipients.map((r) => final.get(r)!);
  }

  async close(): Promise<void> {
    for (const client of this.clients) client.close();
  }
}
