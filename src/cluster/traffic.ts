// The traffic counters behind `smarthost stats --cluster`: every relay adds its counts to one
// hash per minute in Redis (`<name>:traffic:<minute>`, kept 25 hours), so the report covers all
// relays. Counts gather in memory and go out once a second in one transaction, so accepting a
// message never waits for Redis; while Redis is degraded they keep gathering (bounded: at most
// MAX_KEYS rows a minute, the rest under "(other)", and only the last 24 h) and go out when it
// is back.
import { isRefusalReason, type RefusalReason } from '../events.js';
import {
  countAccepted,
  countRefused,
  emptyCounts,
  OTHER_SOURCES,
  trafficKey,
  trafficReport,
  type TrafficCounts,
  type TrafficReport,
} from '../stats/traffic.js';
import type { ClusterClient } from './client.js';

const MINUTE = 60_000;
const RETENTION_MINUTES = 1440;
const MAX_KEYS = 500;
const FLUSH_MS = 1_000;
const TTL_SECONDS = 25 * 3600;

/** A hash field: the row key, a tab, then m r b x l (messages, recipients, bytes, refused, rate-limited) or x:<reason>. */
const FIELDS: [keyof Omit<TrafficCounts, 'reasons'>, string][] = [
  ['messages', 'm'],
  ['recipients', 'r'],
  ['bytes', 'b'],
  ['refused', 'x'],
  ['rateLimited', 'l'],
];

export class ClusterTraffic {
  /** Minute → row key → counts not yet in Redis. */
  private pending = new Map<number, Map<string, TrafficCounts>>();
  private timer: NodeJS.Timeout | undefined;
  private flushing: Promise<void> | undefined;

  constructor(
    private readonly client: ClusterClient,
    private readonly now: () => number = Date.now,
  ) {}

  start(): void {
    this.timer ??= setInterval(() => void this.flush(), FLUSH_MS);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.timer = undefined;
    await this.flush();
  }

  accepted(source: string, recipients: number, bytes: number): void {
    countAccepted(this.counts(source, false), recipients, bytes);
  }

  refused(reason: RefusalReason, client: string, source?: string): void {
    countRefused(source ? this.counts(source, false) : this.counts(client, true), reason);
  }

  private counts(name: string, unknown: boolean): TrafficCounts {
    const minute = Math.floor(this.now() / MINUTE);
    let bucket = this.pending.get(minute);
    if (!bucket) this.pending.set(minute, (bucket = new Map()));
    let key = trafficKey(name, unknown);
    if (!bucket.has(key) && bucket.size >= MAX_KEYS) key = `o:${OTHER_SOURCES}`;
    let counts = bucket.get(key);
    if (!counts) bucket.set(key, (counts = emptyCounts()));
    return counts;
  }

  /** Sends what gathered, in one MULTI; on failure keeps it for the next time. */
  flush(): Promise<void> {
    this.flushing ??= this.send().finally(() => (this.flushing = undefined));
    return this.flushing;
  }

  private async send(): Promise<void> {
    const oldest = Math.floor(this.now() / MINUTE) - RETENTION_MINUTES + 1;
    for (const minute of this.pending.keys()) if (minute < oldest) this.pending.delete(minute);
    if (this.pending.size === 0 || this.client.degraded) return;
    const batch = this.pending;
    this.pending = new Map();
    const keys = this.client.keys;
    const done = await this.client.run(async (r) => {
      const multi = r.multi();
      multi.set(keys.trafficSince, String(this.now()), 'NX');
      for (const [minute, bucket] of batch) {
        const key = keys.traffic(minute);
        for (const [row, c] of bucket) {
          for (const [name, field] of FIELDS) if (c[name]) multi.hincrby(key, `${row}\t${field}`, c[name]);
          for (const [reason, n] of Object.entries(c.reasons)) multi.hincrby(key, `${row}\tx:${reason}`, n);
        }
        multi.expire(key, TTL_SECONDS);
      }
      const results = await multi.exec();
      if (!results) throw new Error('the traffic transaction was aborted');
      return true;
    });
    if (!done) this.requeue(batch);
  }

  /** A batch that did not reach Redis goes back in front of what gathered since. */
  private requeue(batch: Map<number, Map<string, TrafficCounts>>): void {
    for (const [minute, bucket] of this.pending) {
      const into = batch.get(minute) ?? new Map<string, TrafficCounts>();
      batch.set(minute, into);
      for (const [row, c] of bucket) {
        const to = into.get(row);
        if (!to) into.set(row, c);
        else {
          for (const [name] of FIELDS) to[name] += c[name];
          for (const [reason, n] of Object.entries(c.reasons) as [RefusalReason, number][])
            to.reasons[reason] = (to.reasons[reason] ?? 0) + n;
        }
      }
    }
    this.pending = batch;
  }

  /** All relays' report, as `smarthost stats` makes it; undefined when Redis cannot answer. */
  async report(sinceMs: number, limit: number): Promise<TrafficReport | undefined> {
    await this.flush();
    const now = this.now();
    const minutes = Math.max(1, Math.min(RETENTION_MINUTES, Math.ceil(sinceMs / MINUTE)));
    const current = Math.floor(now / MINUTE);
    const keys = this.client.keys;
    const read = await this.client.run(async (r) => {
      const pipeline = r.pipeline();
      pipeline.get(keys.trafficSince);
      for (let m = current - minutes + 1; m <= current; m++) pipeline.hgetall(keys.traffic(m));
      const results = await pipeline.exec();
      if (!results) throw new Error('no reply to the traffic read');
      for (const [err] of results) if (err) throw err;
      return results.map(([, value]) => value);
    });
    if (!read) return undefined;
    const [since, ...hashes] = read as [string | null, ...Record<string, string>[]];
    const buckets = new Map<number, Map<string, TrafficCounts>>();
    hashes.forEach((hash, i) => buckets.set(current - minutes + 1 + i, parseHash(hash)));
    return trafficReport(buckets, now, RETENTION_MINUTES, Number(since) || now, sinceMs, limit);
  }
}

/** A minute's hash back into rows (fields it does not know are skipped). */
export function parseHash(hash: Record<string, string>): Map<string, TrafficCounts> {
  const rows = new Map<string, TrafficCounts>();
  for (const [field, value] of Object.entries(hash)) {
    const tab = field.lastIndexOf('\t');
    if (tab < 2) continue;
    const row = field.slice(0, tab);
    const what = field.slice(tab + 1);
    const n = Number(value);
    if (!Number.isFinite(n)) continue;
    let counts = rows.get(row);
    if (!counts) rows.set(row, (counts = emptyCounts()));
    if (what.startsWith('x:')) {
      // A reason this version does not know (a newer relay wrote it) stays in `refused` only.
      const reason = what.slice(2);
      if (isRefusalReason(reason)) counts.reasons[reason] = n;
    } else {
      const entry = FIELDS.find(([, f]) => f === what);
      if (entry) counts[entry[0]] = n;
    }
  }
  return rows;
}
