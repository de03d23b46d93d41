// Which upstreams may carry a message, per recipient (Postfix's transport_maps, by domain).
//
// By recipient domain: an upstream listing a recipient's domain in `recipientDomains` takes
// that recipient, and only the upstreams listing it are candidates for it (in config order,
// failover among them only): mail to the company's own domains goes to its Exchange or
// Microsoft 365 connector and never leaves through the ESP, not even while Exchange is down
// (it waits in the queue). Other recipients go through the upstreams without
// `recipientDomains` (or, when every upstream has some, through all of them).
//
// By sender domain, within those candidates: upstreams listing the sender's domain in
// `senderDomains` if any, else those listing no sender domain (else all of them).
//
// A message whose recipients fall in several routes is sent in parts, one transaction per
// route; each recipient keeps its own result, so its own status, retry and bounce.
import type { Upstream } from '../config/load.js';
import { domainOf } from '../policy/address.js';

/** What routing needs of an upstream: its settings (and, for size limits, the SIZE learned). */
export interface RoutedUpstream {
  readonly upstream: Upstream;
  readonly maxSize: number | undefined;
}

export interface RoutePart<T> {
  /** The upstreams to try for these recipients, in order. */
  candidates: T[];
  recipients: string[];
}

/**
 * The upstreams that may carry mail from `sender`, in order: those listing its domain in
 * `senderDomains` if any, else those listing no domain (else all).
 */
export function routeFor<T extends RoutedUpstream>(clients: T[], sender: string): T[] {
  const domain = domainOf(sender);
  const routed = clients.filter((c) => domain && c.upstream.senderDomains.includes(domain));
  if (routed.length) return routed;
  const general = clients.filter((c) => c.upstream.senderDomains.length === 0);
  return general.length ? general : clients;
}

/** The upstreams for recipients in no `recipientDomains`: those without any (else all). */
export function generalUpstreams<T extends RoutedUpstream>(clients: T[]): T[] {
  const general = clients.filter((c) => c.upstream.recipientDomains.length === 0);
  return general.length ? general : clients;
}

/** The candidates for one recipient, in order. */
export function routeForRecipient<T extends RoutedUpstream>(
  clients: T[],
  sender: string,
  recipient: string,
): T[] {
  const domain = domainOf(recipient);
  const matching = domain ? clients.filter((c) => c.upstream.recipientDomains.includes(domain)) : [];
  return routeFor(matching.length ? matching : generalUpstreams(clients), sender);
}

/** The recipients grouped by their candidates (one part per distinct route), in first-seen order. */
export function planRoutes<T extends RoutedUpstream>(
  clients: T[],
  sender: string,
  recipients: string[],
): RoutePart<T>[] {
  const parts = new Map<string, RoutePart<T>>();
  for (const recipient of recipients) {
    const candidates = routeForRecipient(clients, sender, recipient);
    const key = candidates.map((c) => clients.indexOf(c)).join(',');
    let part = parts.get(key);
    if (!part) parts.set(key, (part = { candidates, recipients: [] }));
    part.recipients.push(recipient);
  }
  return [...parts.values()];
}
