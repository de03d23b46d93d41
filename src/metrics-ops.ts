// The metrics an operator alerts on, beyond the traffic counters of metrics.ts: whether each
// upstream is up, the dead letters, the queue's bytes and held messages, refusals by reason
// (every reason of events.ts present from the start, so `increase()` sees the first one), the
// delay from acceptance to delivery, and the version. Registered on the Metrics registry by
// metrics.ts; the alert rules and the dashboard under deploy/ use these names (a test scrapes
// a running relay for every name they use).
import type { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { Counter, Gauge, Histogram, type Registry } from 'prom-client';
import type { Courier } from './delivery/courier.js';
import type { UpstreamEvent } from './delivery/upstream-client.js';
import { REFUSAL_REASON_NAMES, type RefusalReason } from './events.js';
import type { AttemptEvent, DeliveryQueue } from './queue/delivery-queue.js';
import type { Spool } from './spool/spool.js';

/** The upstream label in capture mode, as the delivery metrics have it. */
export const CAPTURE_UPSTREAM = 'outbox';

/** A scan of the spool is reused for this long, so one scrape (or a few) pays for one. */
const SCAN_TTL_MS = 5_000;
/** Files stat()ed at once while adding up the queue's bytes. */
const STAT_BATCH = 64;

/** The version in package.json (dist/src/metrics-ops.js → ../../package.json). */
export function packageVersion(): string {
  try {
    const url = new URL('../../package.json', import.meta.url);
    return (JSON.parse(readFileSync(url, 'utf8')) as { version?: string }).version ?? 'unknown';
  } catch {
    return 'unknown';
  }
}

export interface OpsMetricsDeps {
  spool: Spool;
  queue: DeliveryQueue;
  /** For smarthost_build_info; package.json's by default. */
  version?: string;
}

export class OpsMetrics {
  private readonly upstreamUp: Gauge<'upstream'>;
  private readonly throttled: Counter<'upstream'>;
  private readonly refusals: Counter<'reason'>;
  private readonly delay: Histogram<'upstream'>;
  private readonly retentionRemoved: Counter<'folder'>;
  /** The courier whose upstream events count (a reload swaps it; the old one's are ignored). */
  private courier: Courier | undefined;
  private scan: Promise<{ at: number; bytes: number; deadLetters: number }> | undefined;

  constructor(
    registry: Registry,
    private readonly deps: OpsMetricsDeps,
  ) {
    const registers = [registry];
    this.upstreamUp = new Gauge({
      name: 'smarthost_upstream_up',
      help: '1 while the upstream is taking mail, 0 from a failure of the upstream itself (connection, TLS, AUTH, 421) until it answers again; upstream "outbox" in capture mode',
      labelNames: ['upstream'],
      registers,
    });
    this.throttled = new Counter({
      name: 'smarthost_upstream_throttled_total',
      help: 'Replies of an upstream asking to slow down (the relay lowers its pace), per upstream',
      labelNames: ['upstream'],
      registers,
    });
    this.refusals = new Counter({
      name: 'smarthost_refusals_total',
      help: 'Every refusal (of a connection or a command), by reason; every reason is present from the start',
      labelNames: ['reason'],
      registers,
    });
    for (const reason of REFUSAL_REASON_NAMES) this.refusals.inc({ reason }, 0);
    this.delay = new Histogram({
      name: 'smarthost_delivery_latency_seconds',
      help: 'Time from accepting a message (250) to its delivery, per upstream (once per message and upstream)',
      labelNames: ['upstream'],
      buckets: [0.1, 0.5, 1, 5, 15, 60, 300, 900, 1800, 3600, 3 * 3600, 12 * 3600, 86400],
      registers,
    });
    const scanned = () => this.scanned();
    new Gauge({
      name: 'smarthost_queue_bytes',
      help: 'Bytes of the queued messages (their bodies on disk)',
      registers,
      async collect() {
        this.set((await scanned()).bytes);
      },
    });
    new Gauge({
      name: 'smarthost_dead_letters',
      help: 'Messages in failed/ (permanently failed or expired, kept for inspection)',
      registers,
      async collect() {
        this.set((await scanned()).deadLetters);
      },
    });
    // A spool that cannot be read must not break the whole scrape: 0 then.
    const held = async () => ((await deps.spool.held?.ids().catch(() => [])) ?? []).length;
    new Gauge({
      name: 'smarthost_queue_held',
      help: 'Queued messages on hold (never attempted until released)',
      registers,
      async collect() {
        this.set(await held());
      },
    });
    this.retentionRemoved = new Counter({
      name: 'smarthost_retention_removed_total',
      help: 'Files removed by retention: old dead letters (folder "failed") and captured messages ("outbox")',
      labelNames: ['folder'],
      registers,
    });
    for (const folder of ['failed', 'outbox']) this.retentionRemoved.inc({ folder }, 0);
    new Gauge({
      name: 'smarthost_build_info',
      help: 'Always 1; the version of smarthost running, as a label',
      labelNames: ['version'],
      registers,
    }).set({ version: deps.version ?? packageVersion() }, 1);

    deps.queue.on('attempt', (event: AttemptEvent) => this.attempted(event));
  }

  /** What a retention sweep removed. */
  retentionSwept(result: { failed: number; outbox: number }): void {
    this.retentionRemoved.inc({ folder: 'failed' }, result.failed);
    this.retentionRemoved.inc({ folder: 'outbox' }, result.outbox);
  }

  /** A refusal (any stage), by its reason. */
  refused(reason: RefusalReason): void {
    this.refusals.inc({ reason });
  }

  /**
   * The courier now in use, and its upstreams' names: each starts up (as the courier's health
   * does) and follows the courier's down/up events. Called at start and after a reload swaps
   * the courier; the previous courier's upstreams leave the gauge.
   */
  useCourier(courier: Courier, upstreams: string[]): void {
    this.courier = courier;
    this.upstreamUp.reset();
    const names = upstreams.length ? upstreams : [CAPTURE_UPSTREAM];
    for (const upstream of names) {
      this.upstreamUp.set({ upstream }, 1);
      this.throttled.inc({ upstream }, 0);
    }
    const emitter = courier as Partial<EventEmitter>;
    if (typeof emitter.on !== 'function') return;
    emitter.on('upstream', (event: UpstreamEvent) => {
      if (this.courier !== courier) return;
      if (event.state === 'down') this.upstreamUp.set({ upstream: event.upstream }, 0);
      else if (event.state === 'up') this.upstreamUp.set({ upstream: event.upstream }, 1);
      else if (event.state === 'throttled') this.throttled.inc({ upstream: event.upstream });
    });
  }

  private attempted({ entry, results }: AttemptEvent): void {
    const delivered = new Set<string>();
    for (const r of results) if (r.outcome === 'delivered') delivered.add(r.upstream ?? '(none)');
    const seconds = Math.max(0, (Date.now() - entry.createdAt) / 1000);
    for (const upstream of delivered) this.delay.observe({ upstream }, seconds);
  }

  /** The queue's bytes and the dead letters, from one scan shared for SCAN_TTL_MS. */
  private async scanned(): Promise<{ bytes: number; deadLetters: number }> {
    const current = this.scan;
    if (current) {
      const result = await current;
      if (Date.now() - result.at < SCAN_TTL_MS) return result;
      if (this.scan !== current) return this.scanned();
    }
    const next = this.scanSpool();
    this.scan = next;
    return next;
  }

  /** Never rejects: a spool that cannot be read shows as empty here (and fails /healthz). */
  private async scanSpool(): Promise<{ at: number; bytes: number; deadLetters: number }> {
    const [bytes, deadLetters] = await Promise.all([
      this.queueBytes().catch(() => 0),
      this.deadLetters().catch(() => 0),
    ]);
    return { at: Date.now(), bytes, deadLetters };
  }

  private async queueBytes(): Promise<number> {
    const { spool } = this.deps;
    const ids = await spool.ids();
    let bytes = 0;
    for (let i = 0; i < ids.length; i += STAT_BATCH) {
      const sizes = await Promise.all(
        ids.slice(i, i + STAT_BATCH).map(
          (id) => spool.storedSize(id), // 0: delivered or removed meanwhile
        ),
      );
      for (const size of sizes) bytes += size;
    }
    return bytes;
  }

  private async deadLetters(): Promise<number> {
    const names = await readdir(this.deps.spool.failedDir);
    return names.filter((name) => name.endsWith('.json')).length;
  }
}
