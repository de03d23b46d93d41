// In-memory traffic counters for `smarthost stats`: per source, per minute, for the last 24
// hours. Answers "which device is flooding?" before the ESP complains. Nothing here is
// durable (a restart starts from zero; the logs and /metrics are the record).
//
// Memory is bounded whatever the traffic: at most `retentionMinutes` buckets, and in each at
// most `maxKeysPerMinute` distinct sources (further ones are added up under "(other)"), so a
// scan from thousands of unknown addresses cannot grow it without limit.
import { parseDuration } from '../config/units.js';
import { ControlRefusal } from '../control/protocol.js';
import { isRateLimitReason, type RefusalReason } from '../events.js';

export interface TrafficCounts {
  /** Messages accepted. */
  messages: number;
  /** Recipients of the accepted messages. */
  recipients: number;
  /** Bytes of the accepted messages. */
  bytes: number;
  /** Refusal replies (any reason, rate limits included). */
  refused: number;
  /** Refusals because a rate limit was reached. */
  rateLimited: number;
  /** Refusals by reason (the names of events.ts). */
  reasons: Partial<Record<RefusalReason, number>>;
}

export interface TrafficRow extends TrafficCounts {
  /** The source's name; for a client that matched no source, its address. */
  source: string;
  /** True when `source` is a client address that matched no source (not allowed). */
  unknown: boolean;
}

export interface TrafficReport {
  /** ISO times of the window. */
  since: string;
  until: string;
  /** The window asked for, in minutes (capped at what is kept). */
  minutes: number;
  /** When the relay started counting (data before it does not exist). */
  countingSince: string;
  totals: Omit<TrafficCounts, 'reasons'>;
  /** Distinct sources seen in the window. */
  sources: number;
  top: {
    messages: TrafficRow[];
    refusals: TrafficRow[];
    rateLimited: TrafficRow[];
  };
}

export interface TrafficOptions {
  now?: () => number;
  /** How many minutes are kept, default 1440 (24 h). */
  retentionMinutes?: number;
  /** Distinct sources per minute before the rest is counted as "(other)", default 500. */
  maxKeysPerMinute?: number;
}

export const OTHER_SOURCES = '(other)';
const MINUTE = 60_000;

export function emptyCounts(): TrafficCounts {
  return { messages: 0, recipients: 0, bytes: 0, refused: 0, rateLimited: 0, reasons: {} };
}

/** Adds an accepted message to a minute's counts (here and in the cluster's, cluster/traffic.ts). */
export function countAccepted(counts: TrafficCounts, recipients: number, bytes: number): void {
  counts.messages++;
  counts.recipients += recipients;
  counts.bytes += bytes;
}

/** Adds a refusal to a minute's counts. */
export function countRefused(counts: TrafficCounts, reason: RefusalReason): void {
  counts.refused++;
  counts.reasons[reason] = (counts.reasons[reason] ?? 0) + 1;
  if (isRateLimitReason(reason)) counts.rateLimited++;
}

export class TrafficStats {
  private readonly now: () => number;
  private readonly retention: number;
  private readonly maxKeys: number;
  /** Minute number → source key → counts. Insertion order is time order. */
  private readonly buckets = new Map<number, Map<string, TrafficCounts>>();
  private readonly started: number;

  constructor(options: TrafficOptions = {}) {
    this.now = options.now ?? Date.now;
    this.retention = options.retentionMinutes ?? 1440;
    this.maxKeys = options.maxKeysPerMinute ?? 500;
    this.started = this.now();
  }

  /** A message from `source` was accepted. */
  accepted(source: string, recipients: number, bytes: number): void {
    countAccepted(this.counts(source, false), recipients, bytes);
  }

  /** A refusal: counted under the source, or under the client's address when there is none. */
  refused(reason: RefusalReason, client: string, source?: string): void {
    countRefused(source ? this.counts(source, false) : this.counts(client, true), reason);
  }

  private counts(name: string, unknown: boolean): TrafficCounts {
    const minute = Math.floor(this.now() / MINUTE);
    let bucket = this.buckets.get(minute);
    if (!bucket) {
      bucket = new Map();
      this.buckets.set(minute, bucket);
      this.prune(minute);
    }
    let key = trafficKey(name, unknown);
    let counts = bucket.get(key);
    if (!counts) {
      if (bucket.size >= this.maxKeys) key = `o:${OTHER_SOURCES}`;
      counts = bucket.get(key);
      if (!counts) bucket.set(key, (counts = emptyCounts()));
    }
    return counts;
  }

  private prune(current: number): void {
    const oldest = current - this.retention + 1;
    for (const minute of this.buckets.keys()) {
      if (minute < oldest || minute > current + 1) this.buckets.delete(minute);
    }
  }

  /** The top `limit` sources by messages, refusals and rate-limit hits over the last `sinceMs`. */
  report(sinceMs: number, limit = 10): TrafficReport {
    return trafficReport(this.buckets, this.now(), this.retention, this.started, sinceMs, limit);
  }
}

/** A row's key in a minute's bucket: `s:` a source, `c:` a client address matching none, `o:` the rest. */
export function trafficKey(name: string, unknown: boolean): string {
  return `${unknown ? 'c' : 's'}:${name}`;
}

/**
 * The report over per-minute buckets (minute number → row key → counts): this relay's own, or
 * all relays' in cluster mode (src/cluster/traffic.ts).
 */
export function trafficReport(
  buckets: Iterable<[number, Map<string, TrafficCounts>]>,
  now: number,
  retention: number,
  started: number,
  sinceMs: number,
  limit = 10,
): TrafficReport {
  const minutes = Math.max(1, Math.min(retention, Math.ceil(sinceMs / MINUTE)));
  const current = Math.floor(now / MINUTE);
  // The current (partial) minute plus minutes-1 whole ones before it.
  const first = current - minutes + 1;
  const rows = new Map<string, TrafficRow>();
  for (const [minute, bucket] of buckets) {
    if (minute < first || minute > current) continue;
    for (const [key, c] of bucket) {
      let row = rows.get(key);
      if (!row) {
        row = { source: key.slice(2), unknown: key.startsWith('c:'), ...emptyCounts() };
        rows.set(key, row);
      }
      addCounts(row, c);
      for (const [reason, n] of Object.entries(c.reasons) as [RefusalReason, number][])
        row.reasons[reason] = (row.reasons[reason] ?? 0) + n;
    }
  }
  const all = [...rows.values()];
  const totals: Totals = { messages: 0, recipients: 0, bytes: 0, refused: 0, rateLimited: 0 };
  for (const r of all) addCounts(totals, r);
  const top = (key: 'messages' | 'refused' | 'rateLimited') =>
    all
      .filter((r) => r[key] > 0)
      .sort((a, b) => b[key] - a[key] || a.source.localeCompare(b.source))
      .slice(0, limit);
  return {
    since: new Date(first * MINUTE).toISOString(),
    until: new Date(now).toISOString(),
    minutes,
    countingSince: new Date(started).toISOString(),
    totals,
    sources: all.length,
    top: { messages: top('messages'), refusals: top('refused'), rateLimited: top('rateLimited') },
  };
}

/**
 * The control-socket handler for `stats`: `{since?: "1h" | seconds, limit?: n, cluster?: true}`
 * → TrafficReport. `cluster`: all relays' counts (cluster mode), from `cluster`, which answers
 * undefined when the shared counts cannot be read.
 */
export function statsHandler(
  traffic: TrafficStats,
  cluster?: { report(sinceMs: number, limit: number): Promise<TrafficReport | undefined> },
): (args: unknown) => Promise<TrafficReport> {
  return async (args) => {
    const a = (args && typeof args === 'object' ? args : {}) as {
      since?: unknown;
      limit?: unknown;
      cluster?: unknown;
    };
    const since =
      typeof a.since === 'string' || typeof a.since === 'number' ? parseDuration(a.since) : 3_600_000;
    if (since === undefined || since <= 0) {
      throw new ControlRefusal(
        `--since: expected a duration such as 15m, 1h or 24h, got ${JSON.stringify(a.since)}`,
      );
    }
    const limit = typeof a.limit === 'number' && a.limit > 0 ? Math.floor(a.limit) : 10;
    if (a.cluster === true) {
      if (!cluster)
        throw new ControlRefusal('--cluster: this relay is not in cluster mode (no cluster: in its config)');
      const report = await cluster.report(since, limit);
      if (!report)
        throw new ControlRefusal(
          '--cluster: Redis is unavailable now; `smarthost stats` shows this relay alone',
        );
      return report;
    }
    return traffic.report(since, limit);
  };
}

type Totals = Omit<TrafficCounts, 'reasons'>;

/** Adds the numeric counts of `from` to `to`. */
function addCounts(to: Totals, from: Totals): void {
  to.messages += from.messages;
  to.recipients += from.recipients;
  to.bytes += from.bytes;
  to.refused += from.refused;
  to.rateLimited += from.rateLimited;
}
