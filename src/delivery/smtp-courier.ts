// Delivery to the ESPs: each upstream is an UpstreamClient (upstream-client.ts); this is the
// order and routing between them.
//
// Several upstreams are tried in order. A temporary failure moves the recipients it hit on to
// the next upstream; a permanent one is final. An upstream that fails itself (connection,
// greeting, TLS, AUTH, a 421, a lost connection: classify.ts) is marked down for a back-off
// period (30 s doubling to 5 min by default) and skipped while down, unless every candidate is
// down: then they are tried in order anyway. A 4xx to one message's MAIL, RCPT or DATA says
// nothing about the upstream and never marks it down. Once the period is over the next message
// tries it again, and one success brings it back. Each upstream is paced evenly to its
// `rateLimit` (pacer.ts), and a throttling reply slows it down until replies are clean again.
//
// Routing by sender domain: when an upstream lists the sender's domain in `senderDomains`,
// only the upstreams listing it are candidates. Mail from such a domain never leaves through
// another upstream, not even while its own are down: it waits in the queue for them (another
// ESP account would send it with the wrong credentials, SPF and DKIM). Other mail goes through
// the upstreams with no `senderDomains` (or, when there are none, through all of them).
import { EventEmitter } from 'node:events';
import type { Upstream } from '../config/load.js';
import type { Logger } from '../log.js';
import type { SharedPace } from '../cluster/pace.js';
import type { QueueEntry } from '../spool/entry.js';
import { systemClock, type Clock } from '../upstream/clock.js';
import { tokenUrlOf } from '../upstream/oauth.js';
import type { Courier, MessageBody, RecipientResult } from './courier.js';
import { SIZE_HEADROOM, UpstreamClient, type UpstreamEvent, type UpstreamWithCa } from './upstream-client.js';
import { generalUpstreams, planRoutes, routeFor, type RoutedUpstream } from './routes.js';

export { SIZE_HEADROOM, transportOptions } from './upstream-client.js';
export { routeFor, type RoutedUpstream } from './routes.js';

export interface SmtpCourierOptions {
  log?: Logger;
  clock?: Clock;
  /** Cluster mode: each upstream's pace shared with the other relays, by upstream name. */
  sharedPace?: (upstream: string) => SharedPace | undefined;
}

/**
 * Upstreams in order, with failover, health, pacing and routing by sender domain (see the top
 * of this file). Emits 'upstream' events ({@link UpstreamEvent}).
 */
export class SmtpCourier extends EventEmitter implements Courier {
  readonly description: string;
  readonly clients: UpstreamClient[];
  private readonly clock: Clock;
  private readonly log: Logger | undefined;

  constructor(upstreams: UpstreamWithCa[], hostname: string, options: SmtpCourierOptions = {}) {
    super();
    this.clock = options.clock ?? systemClock;
    this.log = options.log;
    const emit = (event: UpstreamEvent) => this.emit('upstream', event);
    this.clients = upstreams.map(
      (u) =>
        new UpstreamClient(u, {
          hostname,
          log: options.log,
          clock: this.clock,
          emit,
          sharedPace: options.sharedPace?.(u.name),
        }),
    );
    this.description = describeUpstreams(upstreams);
  }

  /** Learns each upstream's SIZE and checks it is reachable, in the background. */
  start(): void {
    for (const client of this.clients) void client.probe();
  }

  /** The upstreams that may carry mail from `sender` to recipients outside every `recipientDomains`. */
  route(sender: string): UpstreamClient[] {
    return routeFor(generalUpstreams(this.clients), sender);
  }

  /**
   * The largest message the upstreams for `sender` (any sender when absent) can take, less the
   * room for what the relay adds; undefined while unknown or unlimited.
   */
  sizeLimit(sender?: string): number | undefined {
    return sizeLimitOf(this.clients, sender);
  }

  /** One transaction per route (routes.ts), at the same time; each recipient's own result. */
  async send(entry: QueueEntry, recipients: string[], body: MessageBody): Promise<RecipientResult[]> {
    const parts = planRoutes(this.clients, entry.from, recipients);
    if (parts.length === 1) return this.sendVia(parts[0]!.candidates, entry, recipients, body);
    const results = await Promise.all(
      parts.map((p) => this.sendVia(p.candidates, entry, p.recipients, body)),
    );
    const byRecipient = new Map(results.flat().map((r) => [r.recipient, r]));
    return recipients.map((r) => byRecipient.get(r)!);
  }

  /** Tries `candidates` in order (see the top of this file) for `recipients`. */
  private async sendVia(
    candidates: UpstreamClient[],
    entry: QueueEntry,
    recipients: string[],
    body: MessageBody,
  ): Promise<RecipientResult[]> {
    const now = this.clock.now();
    const up = candidates.filter((c) => !c.isDown(now));
    // Every candidate down: try them in order anyway, a quick refusal costs little.
    const order = up.length ? up : candidates;
    const final = new Map<string, RecipientResult>();
    let remaining = recipients;
    for (const client of order) {
      const results = await client.send(entry, remaining, body);
      for (const result of results) final.set(result.recipient, result);
      remaining = results.filter((r) => r.outcome === 'temporary').map((r) => r.recipient);
      if (remaining.length === 0) break;
      const next = order[order.indexOf(client) + 1];
      if (next) {
        this.log?.info(`upstream ${client.name} failed temporarily, trying ${next.name}`, {
          id: entry.id,
          event: 'failover',
          upstream: client.name,
          next: next.name,
          recipients: remaining.length,
          reply: results.find((r) => r.outcome === 'temporary')?.reply,
        });
      }
    }
    const fallback = order[order.length - 1]?.name ?? '(none)';
    return recipients.map(
      (r) =>
        final.get(r) ?? {
          recipient: r,
          outcome: 'temporary' as const,
          reply: 'no upstream could be tried',
          upstream: fallback,
        },
    );
  }

  /** Shutdown: stop waiting for the pace, so deliveries in flight end quickly. */
  stopping(): void {
    for (const client of this.clients) client.stopWaiting();
  }

  async close(): Promise<void> {
    for (const client of this.clients) client.close();
  }
}

/**
 * The largest message the upstreams for `sender` (any sender when absent) can take, less the
 * room for what the relay adds; undefined while unknown or unlimited.
 */
export function sizeLimitOf(clients: RoutedUpstream[], sender?: string): number | undefined {
  // Recipient-routed upstreams (an Exchange) take only their domains: not counted here.
  const general = generalUpstreams(clients);
  const candidates = sender === undefined ? general : routeFor(general, sender);
  let largest = 0;
  for (const client of candidates) {
    if (!client.maxSize) return undefined;
    largest = Math.max(largest, client.maxSize);
  }
  return largest ? Math.max(largest - SIZE_HEADROOM, 1) : undefined;
}

/** For the start-up log: where mail goes. */
export function describeUpstreams(upstreams: Upstream[]): string {
  return `delivering to ${upstreams.map(describeUpstream).join(', then ')}`;
}

function describeUpstream(u: Upstream): string {
  const extras = [
    u.tls,
    u.auth ? `OAuth2 ${u.auth.provider} via ${tokenUrlOf(u.auth)}` : undefined,
    u.rateLimit ? `at most ${u.rateLimit.text}` : undefined,
    u.senderDomains.length ? `for ${u.senderDomains.join(', ')}` : undefined,
    u.recipientDomains.length ? `to ${u.recipientDomains.join(', ')}` : undefined,
  ].filter(Boolean);
  return `${u.name} (${extras.join(', ')})`;
}
