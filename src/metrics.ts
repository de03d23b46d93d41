// Prometheus metrics and the health check, on a local HTTP listener (`metrics: {host, port}`).
// One registry per Relay (never prom-client's global one), so several relays can run in one
// process (tests). Every label value is bounded: sources are config names (or "(unknown)"),
// reasons are the fixed set of events.ts, upstreams are config names. The operators' gauges
// (upstream up, dead letters, queue bytes, build info…) are in metrics-ops.ts.
//
//   GET /metrics   Prometheus text format
//   GET /healthz   200 "ok" while every listener is up and the spool is writable, else 503
//                  with the reason(s), one per line (liveness)
//   GET /readyz    200 "ready" while the relay can deliver, else 503 with the reason in one
//                  line (readiness: src/readiness.ts)
import http from 'node:http';
import type net from 'node:net';
import { constants } from 'node:fs';
import { access } from 'node:fs/promises';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { isConnectionReason, isRateLimitReason, REFUSAL_REASON_NAMES, type RefusalReason } from './events.js';
import type { Logger } from './log.js';
import { OpsMetrics } from './metrics-ops.js';
import type { AttemptEvent, DeliveryQueue } from './queue/delivery-queue.js';
import type { QueueEntry } from './spool/entry.js';
import type { Spool } from './spool/spool.js';

/** The label value for a refusal whose client matched no source (not in the allowlist, no login). */
export const UNKNOWN_SOURCE = '(unknown)';

/** What the metrics need to know about one SMTP listener. */
export interface ListenerProbe {
  /** "host:port". */
  name: string;
  /** smtp-server's open sessions. */
  connections: { size: number };
  /** The TCP server underneath (for the connection counter and "is it up"). */
  tcp: net.Server;
}

export interface MetricsDeps {
  spool: Spool;
  queue: DeliveryQueue;
  log: Logger;
  /** The listeners now running (empty before start and after stop). */
  listeners: () => ListenerProbe[];
  isShuttingDown: () => boolean;
  /** What /readyz answers (404 without it). */
  readiness?: () => Promise<{ ready: boolean; reason?: string }>;
  /** Process metrics (CPU, memory, event loop); on in the daemon, off in tests by default. */
  processMetrics?: boolean;
}

export interface Health {
  ok: boolean;
  problems: string[];
}

export class Metrics {
  readonly registry = new Registry();
  /** Upstream up, dead letters, queue bytes and held, refusals by reason, build info. */
  readonly ops: OpsMetrics;
  private server: http.Server | undefined;

  private readonly connectionsTotal: Counter<'listener'>;
  private readonly connectionsRefused: Counter<'reason'>;
  private readonly accepted: Counter<'source'>;
  private readonly receivedBytes: Counter<'source'>;
  private readonly refusals: Counter<'reason' | 'source'>;
  private readonly rateLimitHits: Counter<'source'>;
  private readonly attempts: Counter<'outcome' | 'upstream'>;
  private readonly recipients: Counter<'outcome' | 'upstream'>;
  private readonly latency: Histogram<'upstream'>;
  private readonly relayedBytes: Counter<'upstream'>;
  private readonly bounces: Counter;
  private readonly certificateExpiry: Gauge<'cert'>;

  constructor(private readonly deps: MetricsDeps) {
    const registers = [this.registry];
    const listeners = deps.listeners;
    new Gauge({
      name: 'smarthost_connections_open',
      help: 'SMTP sessions open now, per listener',
      labelNames: ['listener'],
      registers,
      collect() {
        this.reset();
        for (const l of listeners()) this.set({ listener: l.name }, l.connections.size);
      },
    });
    this.connectionsTotal = new Counter({
      name: 'smarthost_connections_total',
      help: 'TCP connections accepted by the listeners since start, per listener',
      labelNames: ['listener'],
      registers,
    });
    this.connectionsRefused = new Counter({
      name: 'smarthost_connections_refused_total',
      help: 'Connections refused before the greeting, by reason',
      labelNames: ['reason'],
      registers,
    });
    // Every connection reason from the start, so rate() and increase() see the first refusal.
    for (const reason of REFUSAL_REASON_NAMES) {
      if (isConnectionReason(reason)) this.connectionsRefused.inc({ reason }, 0);
    }
    this.accepted = new Counter({
      name: 'smarthost_messages_accepted_total',
      help: 'Messages accepted (on disk, 250 sent), by source',
      labelNames: ['source'],
      registers,
    });
    this.receivedBytes = new Counter({
      name: 'smarthost_received_bytes_total',
      help: 'Bytes of accepted messages, by source',
      labelNames: ['source'],
      registers,
    });
    this.refusals = new Counter({
      name: 'smarthost_messages_refused_total',
      help: 'Refusal replies to commands (AUTH, MAIL, RCPT, DATA), by reason and source ("(unknown)": not in the allowlist, not logged in)',
      labelNames: ['reason', 'source'],
      registers,
    });
    this.rateLimitHits = new Counter({
      name: 'smarthost_rate_limit_hits_total',
      help: 'Refusals because a rate limit was reached, by source',
      labelNames: ['source'],
      registers,
    });
    const queue = deps.queue;
    new Gauge({
      name: 'smarthost_queue_depth',
      help: 'Messages in the queue (waiting or being delivered)',
      registers,
      collect() {
        this.set(queue.depth);
      },
    });
    new Gauge({
      name: 'smarthost_queue_in_flight',
      help: 'Deliveries in progress now',
      registers,
      collect() {
        this.set(queue.active);
      },
    });
    const oldest = () => this.oldestMessageAge();
    new Gauge({
      name: 'smarthost_queue_oldest_message_age_seconds',
      help: 'Age of the oldest message in the queue (0 when the queue is empty)',
      registers,
      async collect() {
        this.set(await oldest());
      },
    });
    this.attempts = new Counter({
      name: 'smarthost_delivery_attempts_total',
      help: 'Delivery attempts by outcome (delivered, temporary, permanent) and upstream; an attempt with mixed outcomes counts once per outcome',
      labelNames: ['outcome', 'upstream'],
      registers,
    });
    this.recipients = new Counter({
      name: 'smarthost_delivery_recipients_total',
      help: 'Recipients handed to an upstream, by outcome and upstream',
      labelNames: ['outcome', 'upstream'],
      registers,
    });
    this.latency = new Histogram({
      name: 'smarthost_upstream_latency_seconds',
      help: 'Time from handing a message to the upstream to its final reply, per upstream',
      labelNames: ['upstream'],
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
      registers,
    });
    this.relayedBytes = new Counter({
      name: 'smarthost_relayed_bytes_total',
      help: 'Bytes of messages delivered to an upstream (once per message and upstream)',
      labelNames: ['upstream'],
      registers,
    });
    this.bounces = new Counter({
      name: 'smarthost_bounces_total',
      help: 'Delivery status notifications (bounces) generated',
      registers,
    });
    const up: Gauge = new Gauge({
      name: 'smarthost_up',
      help: '1 while the relay is healthy (same check as /healthz), else 0',
      registers,
      collect: async () => up.set((await this.health()).ok ? 1 : 0),
    });
    this.ops = new OpsMetrics(this.registry, { spool: deps.spool, queue });
    this.certificateExpiry = new Gauge({
      name: 'smarthost_tls_certificate_expiry_timestamp_seconds',
      help: 'When the TLS certificate the listeners present expires (Unix time), by certificate file ("selfsigned": made by the relay); set at start and on each reload',
      labelNames: ['cert'],
      registers,
    });
    if (deps.processMetrics) collectDefaultMetrics({ register: this.registry });

    queue.on('attempt', (event: AttemptEvent) => this.onAttempt(event));
    queue.on('bounced', () => this.bounces.inc());
  }

  /** Counts the TCP connections of a listener (call once per listener, after it is created). */
  attachListener(probe: ListenerProbe): void {
    this.connectionsTotal.inc({ listener: probe.name }, 0);
    probe.tcp.on('connection', () => this.connectionsTotal.inc({ listener: probe.name }));
  }

  /** The certificate now in force (one for all listeners): the old series goes with it. */
  certificateLoaded(file: string, notAfterMs: number): void {
    this.certificateExpiry.reset();
    this.certificateExpiry.set({ cert: file }, Math.floor(notAfterMs / 1000));
  }

  /** A message is on disk and acknowledged. */
  messageAccepted(entry: QueueEntry): void {
    this.accepted.inc({ source: entry.source });
    this.receivedBytes.inc({ source: entry.source }, entry.size);
  }

  /** Any refusal the listener sends, with its machine-readable reason. */
  refused(reason: RefusalReason, _client: string, source?: string): void {
    this.ops.refused(reason);
    if (isConnectionReason(reason)) {
      this.connectionsRefused.inc({ reason });
      return;
    }
    const label = source ?? UNKNOWN_SOURCE;
    this.refusals.inc({ reason, source: label });
    if (isRateLimitReason(reason)) this.rateLimitHits.inc({ source: label });
  }

  private onAttempt({ entry, results, durationMs }: AttemptEvent): void {
    const groups = new Map<string, { outcome: string; upstream: string; count: number }>();
    for (const r of results) {
      const upstream = r.upstream ?? '(none)';
      const key = `${r.outcome}\u0000${upstream}`;
      const group = groups.get(key);
      if (group) group.count++;
      else groups.set(key, { outcome: r.outcome, upstream, count: 1 });
    }
    const upstreams = new Set<string>();
    for (const { outcome, upstream, count } of groups.values()) {
      this.attempts.inc({ outcome, upstream });
      this.recipients.inc({ outcome, upstream }, count);
      upstreams.add(upstream);
      if (outcome === 'delivered') this.relayedBytes.inc({ upstream }, entry.size);
    }
    // One observation per upstream that answered; none when the courier never reached one.
    for (const upstream of upstreams) {
      if (upstream !== '(none)') this.latency.observe({ upstream }, durationMs / 1000);
    }
  }

  private async oldestMessageAge(): Promise<number> {
    return (await this.deps.spool.oldestAgeMs()) / 1000;
  }

  /** What /healthz answers: ok only while every listener is up and the spool is writable. */
  async health(): Promise<Health> {
    const problems: string[] = [];
    if (this.deps.isShuttingDown()) problems.push('shutting down');
    const listeners = this.deps.listeners();
    if (listeners.length === 0) problems.push('no SMTP listener is running');
    for (const l of listeners) {
      if (!l.tcp.listening) problems.push(`listener ${l.name} is not listening`);
    }
    // A probe file written (and fsynced) in tmp/, and the right to rename into queue/: what
    // accepting a message needs. (access() also sees a read-only file system, even for root.)
    const queueWritable = await access(this.deps.spool.queueDir, constants.W_OK).then(
      () => true,
      () => false,
    );
    if (!queueWritable || !(await this.deps.spool.isWritable())) {
      problems.push(`spool ${this.deps.spool.dir} is not writable`);
    }
    return { ok: problems.length === 0, problems };
  }

  /** Starts the HTTP listener for /metrics and /healthz. */
  listen(host: string, port: number): Promise<void> {
    const server = http.createServer((req, res) => void this.handle(req, res));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, host, () => {
        server.off('error', reject);
        server.on('error', (err) =>
          this.deps.log.error('metrics listener error', { event: 'metrics_error', error: err.message }),
        );
        resolve();
      });
    });
  }

  get address(): net.AddressInfo | undefined {
    const address = this.server?.address();
    return address && typeof address === 'object' ? address : undefined;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { 'content-type': type, 'cache-control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.setHeader('allow', 'GET, HEAD');
      return send(405, 'text/plain; charset=utf-8', 'method not allowed\n');
    }
    try {
      if (url.pathname === '/metrics') {
        const body = await this.registry.metrics();
        return send(200, this.registry.contentType, body);
      }
      if (url.pathname === '/healthz') {
        const health = await this.health();
        return health.ok
          ? send(200, 'text/plain; charset=utf-8', 'ok\n')
          : send(503, 'text/plain; charset=utf-8', `unhealthy: ${health.problems.join('\n')}\n`);
      }
      if (url.pathname === '/readyz' && this.deps.readiness) {
        const readiness = await this.deps.readiness();
        return readiness.ready
          ? send(200, 'text/plain; charset=utf-8', 'ready\n')
          : send(503, 'text/plain; charset=utf-8', `not ready: ${readiness.reason ?? 'unknown'}\n`);
      }
      send(404, 'text/plain; charset=utf-8', 'not found: try /metrics, /healthz or /readyz\n');
    } catch (err) {
      send(500, 'text/plain; charset=utf-8', `error: ${(err as Error).message}\n`);
    }
  }

  async close(): Promise<void> {
    const server = this.server;
    this.server = undefined;
    if (!server) return;
    await new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
  }
}
