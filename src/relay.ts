// The relay, composed by hand: config → logger → spool → courier → queue → listeners.
// No registry and no globals: everything a test must replace is passed in here.
import { Bouncer } from './bounce/bouncer.js';
import type { Config } from './config/load.js';
import type { Courier } from './delivery/courier.js';
import { OutboxCourier } from './delivery/outbox-courier.js';
import { SmtpCourier } from './delivery/smtp-courier.js';
import { applyLogOptions, type Logger } from './log.js';
import { Metrics, type ListenerProbe } from './metrics.js';
import { PolicyEngine } from './policy/engine.js';
import { DeliveryQueue } from './queue/delivery-queue.js';
import { Listener } from './smtp/listener.js';
import { listenerCertificate } from './smtp/tls.js';
import { Spool } from './spool/spool.js';
import { formatDuration } from './config/units.js';
import { statsHandler, TrafficStats } from './stats/traffic.js';
import { ControlServer } from './control/server.js';
import { registerRelayHandlers } from './control/handlers.js';

export interface RelayOptions {
  config: Config;
  log: Logger;
  /** Replaces the courier chosen from the config (tests). */
  courier?: Courier;
}

export class Relay {
  readonly spool: Spool;
  readonly queue: DeliveryQueue;
  readonly courier: Courier;
  /** Per-source traffic of the last 24 h, for `smarthost stats`. */
  readonly traffic = new TrafficStats();
  /** Prometheus metrics and /healthz; only when `metrics:` is in the config. */
  readonly metrics: Metrics | undefined;
  /** The admin CLI's control socket; add commands with `control.registerHandler`. */
  readonly control: ControlServer;
  private listeners: Listener[] = [];
  private current: { config: Config; policy: PolicyEngine };
  private shuttingDown = false;
  /** The upstream ESP's size limit, as the courier learned it (for the policy's 552). */
  private readonly upstreamSizeLimit = (sender?: string) => this.courier.sizeLimit?.(sender);

  constructor(private readonly options: RelayOptions) {
    const { config, log } = options;
    this.current = {
      config,
      policy: new PolicyEngine(config, { upstreamSizeLimit: this.upstreamSizeLimit }),
    };
    this.spool = new Spool(config.spool.dir);
    this.courier =
      options.courier ??
      (config.upstreams.length
        ? new SmtpCourier(config.upstreams, config.hostname, { log })
        : new OutboxCourier(this.spool.outboxDir));
    const bouncer = new Bouncer(this.spool, () => this.current.config, log);
    this.queue = new DeliveryQueue({
      spool: this.spool,
      courier: this.courier,
      bouncer,
      log,
      config: () => this.current.config,
    });
    this.control = new ControlServer(config.control.socket, log);
    registerRelayHandlers(this.control, this);
    this.control.registerHandler('stats', statsHandler(this.traffic));
    if (config.metrics) {
      this.metrics = new Metrics({
        spool: this.spool,
        queue: this.queue,
        log,
        listeners: () => this.listenerProbes(),
        isShuttingDown: () => this.shuttingDown,
        processMetrics: true,
      });
    }
  }

  private listenerProbes(): ListenerProbe[] {
    return this.listeners.map((l) => ({
      name: `${l.config.host}:${l.config.port}`,
      connections: l.server.connections,
      tcp: l.server.server,
    }));
  }

  get config(): Config {
    return this.current.config;
  }

  get policy(): PolicyEngine {
    return this.current.policy;
  }

  get log(): Logger {
    return this.options.log;
  }

  async start(): Promise<void> {
    const { config, log } = this.options;
    const swept = await this.spool.init();
    if (swept.tmpFiles || swept.orphanBodies) {
      log.info('swept leftovers of an interrupted run', { event: 'spool_swept', ...swept });
    }
    const keyPair = await listenerCertificate(config, log);
    const policy = this.current.policy;
    for (const listen of config.listen) {
      const listener = new Listener(
        listen,
        config.hostname,
        {
          policy: () => this.current.policy,
          spool: this.spool,
          log,
          accepted: (entry) => {
            this.queue.enqueue(entry.id);
            this.traffic.accepted(entry.source, entry.recipients.length, entry.size);
            this.metrics?.messageAccepted(entry);
          },
          refused: (reason, client, source) => {
            this.traffic.refused(reason, client, source);
            this.metrics?.refused(reason, client, source);
          },
          isShuttingDown: () => this.shuttingDown,
        },
        keyPair,
        {
          maxSize: policy.maxAdvertisedSize(),
          maxClients: config.limits.maxConnections,
          closeTimeout: config.shutdown.grace,
        },
      );
      await listener.listen();
      this.listeners.push(listener);
      this.metrics?.attachListener(this.listenerProbes().at(-1)!);
      const mode = listen.implicitTls
        ? 'implicit TLS'
        : listen.requireTls
          ? 'STARTTLS required'
          : listen.starttls
            ? 'STARTTLS offered'
            : 'plain';
      log.info(`listening on ${listen.host}:${listen.port} (${mode})`, {
        event: 'listening',
        host: listen.host,
        port: listen.port,
      });
    }
    const resumed = await this.queue.start();
    await this.control.listen().catch((err: Error) =>
      log.error(`no control socket, the queue commands of the CLI cannot reach this relay: ${err.message}`, {
        event: 'control_failed',
      }),
    );
    if (this.metrics && config.metrics) {
      await this.metrics.listen(config.metrics.host, config.metrics.port);
      log.info(`metrics on http://${config.metrics.host}:${config.metrics.port}/metrics (health: /healthz)`, {
        event: 'metrics_listening',
        host: config.metrics.host,
        port: config.metrics.port,
      });
    }
    if (this.courier instanceof OutboxCourier) {
      log.warn('*** CAPTURE MODE: no upstream is configured, nothing will be sent ***', {
        event: 'capture_mode',
      });
      log.warn(
        `messages are written to ${this.spool.outboxDir} instead; set upstream: in the config to deliver`,
        {
          event: 'capture_mode',
        },
      );
    } else {
      log.info(this.courier.description, { event: 'upstream' });
      // Checks each upstream in the background and learns its SIZE (enforced at accept time).
      this.courier.start?.();
    }
    log.info(`smarthost started (config: ${config.source})`, {
      event: 'started',
      queued: resumed,
      spool: config.spool.dir,
      maxAge: formatDuration(config.queue.maxAge),
    });
  }

  /** Swaps in a new config: new connections and transactions see it at once; open sessions go on. */
  applyConfig(config: Config): void {
    this.current = {
      config,
      policy: new PolicyEngine(config, {
        upstreamSizeLimit: this.upstreamSizeLimit,
        previous: this.current.policy,
      }),
    };
    applyLogOptions(this.options.log, config.log);
  }

  /** Stops accepting, lets open sessions finish (up to the grace period), stops delivery. */
  async stop(): Promise<void> {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    const { log } = this.options;
    log.info('shutting down: no new connections, finishing open sessions and deliveries', {
      event: 'stopping',
    });
    await this.control.close();
    await Promise.all(this.listeners.map((l) => l.close(this.current.config.shutdown.grace)));
    // Messages only waiting for an upstream's pace give up their turn (they stay queued).
    this.courier.stopping?.();
    await this.queue.stop();
    await this.courier.close();
    await this.metrics?.close();
    log.info('stopped', { event: 'stopped' });
  }
}
