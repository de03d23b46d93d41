// The relay, composed by hand: config → logger → spool → courier → queue → listeners.
// No registry and no globals: everything a test must replace is passed in here.
import { Bouncer } from './bounce/bouncer.js';
import type { Config } from './config/load.js';
import type { Courier } from './delivery/courier.js';
import { OutboxCourier } from './delivery/outbox-courier.js';
import { SmtpCourier } from './delivery/smtp-courier.js';
import type { Logger } from './log.js';
import { PolicyEngine } from './policy/engine.js';
import { DeliveryQueue } from './queue/delivery-queue.js';
import { Listener } from './smtp/listener.js';
import { listenerCertificate } from './smtp/tls.js';
import { Spool } from './spool/spool.js';
import { formatDuration } from './config/units.js';

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
  private listeners: Listener[] = [];
  private current: { config: Config; policy: PolicyEngine };
  private shuttingDown = false;

  constructor(private readonly options: RelayOptions) {
    const { config, log } = options;
    this.current = { config, policy: new PolicyEngine(config) };
    this.spool = new Spool(config.spool.dir);
    this.courier =
      options.courier ??
      (config.upstreams.length
        ? new SmtpCourier(config.upstreams, config.hostname)
        : new OutboxCourier(this.spool.outboxDir));
    const bouncer = new Bouncer(this.spool, () => this.current.config, log);
    this.queue = new DeliveryQueue({
      spool: this.spool,
      courier: this.courier,
      bouncer,
      log,
      config: () => this.current.config,
    });
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
          accepted: (entry) => this.queue.enqueue(entry.id),
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
    this.current = { config, policy: new PolicyEngine(config) };
  }

  /** Stops accepting, lets open sessions finish (up to the grace period), stops delivery. */
  async stop(): Promise<void> {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    const { log } = this.options;
    log.info('shutting down: no new connections, finishing open sessions and deliveries', {
      event: 'stopping',
    });
    await Promise.all(this.listeners.map((l) => l.close()));
    await this.queue.stop();
    await this.courier.close();
    log.info('stopped', { event: 'stopped' });
  }
}
