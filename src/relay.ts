// The relay, composed by hand (the composition root): config → logger → spool → courier (its
// reload hand-over in delivery/courier-switch.ts) → queue
// → listeners, the control socket, metrics, certificates, readiness, retention, the maildrop
// pickup and the cluster client. The constructor only builds
// them (no file, socket or connection is opened); start() and stop() run them in one fixed
// order (parts() below). No registry and no globals: everything a test must replace is passed in here.
import { Bouncer } from './bounce/bouncer.js';
import type { Config } from './config/load.js';
import type { Courier } from './delivery/courier.js';
import { CourierSwitch } from './delivery/courier-switch.js';
import { applyLogOptions, type Logger } from './log.js';
import { Metrics, type ListenerProbe } from './metrics.js';
import { PolicyEngine, PolicyState } from './policy/engine.js';
import { DeliveryQueue } from './queue/delivery-queue.js';
import { Listener } from './smtp/listener.js';
import { ListenerCertificates, type CertificateReload } from './smtp/cert-reload.js';
import { ReadinessCheck } from './readiness.js';
import { Spool, type QueuedMessage } from './spool/spool.js';
import { SpoolLock } from './spool/lock.js';
import { Lifecycle, type Part } from './lifecycle.js';
import { formatDuration } from './config/units.js';
import { statsHandler, TrafficStats } from './stats/traffic.js';
import { ControlServer } from './control/server.js';
import { registerRelayHandlers } from './control/handlers.js';
import { Cluster } from './cluster/cluster.js';
import { LocalLimits } from './cluster/limits.js';
import { RetentionSweeper } from './spool/retention.js';
import { ControlRefusal } from './control/protocol.js';
import { Pickup } from './maildrop/pickup.js';
import { DROP_NAME } from './maildrop/format.js';

export interface RelayOptions {
  config: Config;
  log: Logger;
  /** Replaces the courier chosen from the config (tests). */
  courier?: Courier;
}

/** What metrics and /healthz look at on a listener. */
function probeOf(listener: Listener): ListenerProbe {
  return {
    name: `${listener.config.host}:${listener.config.port}`,
    connections: listener.connections,
    tcp: listener.server.server,
  };
}

export class Relay {
  readonly spool: Spool;
  readonly queue: DeliveryQueue;
  /** Where mail goes now; a reload that changes the upstreams swaps in a new one. */
  private readonly couriers: CourierSwitch;
  /** Messages found in the spool at start (for the `started` line). */
  private resumed = 0;
  /** Two relays never share one spool (spool/lock.ts). */
  private readonly spoolLock: SpoolLock;
  /** Starts and stops the parts in one fixed order (see parts()). */
  private readonly lifecycle: Lifecycle;
  /** Per-source traffic of the last 24 h, for `smarthost stats`. */
  readonly traffic = new TrafficStats();
  /** Prometheus metrics and /healthz; only when `metrics:` is in the config. */
  readonly metrics: Metrics | undefined;
  /** The admin CLI's control socket; add commands with `control.registerHandler`. */
  readonly control: ControlServer;
  /** Cluster mode (`cluster:`): limits, paces and traffic counters shared in Redis. */
  readonly cluster: Cluster | undefined;
  /** Takes up what `smarthost sendmail` leaves in <spool>/maildrop/. */
  readonly pickup: Pickup;
  private listeners: Listener[] = [];
  /** The listeners' certificate: re-read on reload and when its files change (cert-reload.ts). */
  private readonly certs: ListenerCertificates;
  /** What /readyz answers: can this relay deliver now (readiness.ts). */
  readonly readiness: ReadinessCheck;
  /** Removes old dead letters and captured messages (retention: in the config). */
  private readonly retention: RetentionSweeper;
  private current: { config: Config; policy: PolicyEngine };
  private shuttingDown = false;
  /** The upstream ESP's size limit, as the courier learned it (for the policy's 552). */
  private readonly upstreamSizeLimit = (sender?: string) => this.couriers.current.sizeLimit?.(sender);

  constructor(private readonly options: RelayOptions) {
    const { config, log } = options;
    this.cluster = config.cluster
      ? new Cluster(config.cluster, log, { queued: () => this.queue.depth })
      : undefined;
    // Cluster mode: the rates and failed logins are counted in Redis, the local counters answer
    // when it cannot (both carried over reloads by the engine).
    const state = new PolicyState();
    const limits = this.cluster?.limits(new LocalLimits(state));
    this.current = {
      config,
      policy: new PolicyEngine(config, { upstreamSizeLimit: this.upstreamSizeLimit, state, limits }),
    };
    this.spool = new Spool(config.spool.dir);
    this.spoolLock = new SpoolLock(config.spool.dir);
    const cluster = this.cluster;
    this.couriers = new CourierSwitch(
      config,
      {
        log,
        hostname: config.hostname,
        outboxDir: this.spool.outboxDir,
        sharedPace: cluster && ((upstream) => cluster.pace(upstream)),
        queue: () => this.queue,
        inService: (courier, current) => {
          this.readiness.track(courier);
          this.metrics?.ops.useCourier(
            courier,
            current.upstreams.map((u) => u.name),
          );
        },
      },
      options.courier,
    );
    const bouncer = new Bouncer(this.spool, () => this.current.config, log);
    this.queue = new DeliveryQueue({
      spool: this.spool,
      courier: () => this.couriers.current,
      bouncer,
      log,
      config: () => this.current.config,
    });
    this.certs = new ListenerCertificates({
      log,
      apply: (pair) => {
        for (const listener of this.listeners) listener.updateKeyPair(pair);
      },
      loaded: (file, notAfter) => this.metrics?.certificateLoaded(file, notAfter),
    });
    this.retention = new RetentionSweeper({
      failedDir: this.spool.failedDir,
      outboxDir: this.spool.outboxDir,
      config: () => this.current.config,
      log,
      removed: (result) => this.metrics?.ops.retentionSwept(result),
    });
    this.control = new ControlServer(config.control.socket, log);
    registerRelayHandlers(this.control, this);
    this.pickup = new Pickup({
      spoolDir: config.spool.dir,
      policy: () => this.current.policy,
      spool: this.spool,
      log,
      // A picked-up message is read from disk for its first attempt (no kept body).
      accepted: (entry) => this.accepted({ entry }),
    });
    // sendmail, once its file is in maildrop/, asks for it to be taken now and waits for the answer.
    this.control.registerHandler('pickup', (args) => {
      const name = typeof args.name === 'string' ? args.name : '';
      if (!DROP_NAME.test(name)) throw new ControlRefusal('pickup: expected the name of a maildrop file');
      return this.pickup.take(name);
    });
    this.control.registerHandler('stats', statsHandler(this.traffic, this.cluster?.traffic));
    this.control.registerHandler('cluster.status', async () =>
      this.cluster ? await this.cluster.status() : { configured: false },
    );
    this.readiness = new ReadinessCheck({
      spool: this.spool,
      queue: this.queue,
      log,
      config: () => this.current.config,
      capture: () => this.couriers.capturing,
      liveness: async () => (this.metrics ? (await this.metrics.health()).problems : []),
    });
    if (config.metrics) {
      this.metrics = new Metrics({
        readiness: () => this.readiness.check(),
        spool: this.spool,
        queue: this.queue,
        log,
        listeners: () => this.listenerProbes(),
        isShuttingDown: () => this.shuttingDown,
        processMetrics: true,
      });
      this.cluster?.registerMetrics(this.metrics.registry);
    }
    this.lifecycle = new Lifecycle(this.parts(), (part, err) =>
      log.error(`error while stopping the ${part.name}: ${err.message}`, { event: 'stop_failed' }),
    );
  }

  /** A message is safely on disk (from a listener or the maildrop): to the queue, and counted. */
  private accepted(queued: QueuedMessage): void {
    const { entry } = queued;
    // The item carries a small body: its first attempt need not read the file back.
    this.queue.enqueue(queued);
    this.traffic.accepted(entry.source, entry.recipients.length, entry.size);
    this.cluster?.traffic.accepted(entry.source, entry.recipients.length, entry.size);
    this.metrics?.messageAccepted(entry);
  }

  private listenerProbes(): ListenerProbe[] {
    return this.listeners.map(probeOf);
  }

  get config(): Config {
    return this.current.config;
  }

  /** The courier new delivery attempts use. */
  get courier(): Courier {
    return this.couriers.current;
  }

  get policy(): PolicyEngine {
    return this.current.policy;
  }

  get log(): Logger {
    return this.options.log;
  }

  /**
   * The parts in the order they start; they stop in the reverse order (lifecycle.ts). The spool
   * lock comes first: nothing touches a spool another relay holds. Redis is not waited for (the
   * relay runs on local limits until it answers). Delivery is ready before the listeners take
   * mail (retention and the maildrop pickup start once the queue runs); the certificate watch
   * follows the listeners, the control socket opens next, and the readiness checks (/readyz)
   * start last and stop first.
   */
  private parts(): Part[] {
    const { config, log } = this.options;
    return [
      { name: 'spool lock', start: () => this.spoolLock.acquire(), stop: () => this.spoolLock.release() },
      { name: 'spool', start: () => this.initSpool(), stop: () => undefined },
      { name: 'cluster', start: () => this.cluster?.start(), stop: () => this.cluster?.stop() },
      {
        name: 'metrics',
        start: async () => {
          if (!this.metrics || !config.metrics) return;
          await this.metrics.listen(config.metrics.host, config.metrics.port);
          log.info(
            `metrics on http://${config.metrics.host}:${config.metrics.port}/metrics (health: /healthz, readiness: /readyz)`,
            {
              event: 'metrics_listening',
              host: config.metrics.host,
              port: config.metrics.port,
            },
          );
        },
        stop: () => this.metrics?.close(),
      },
      {
        name: 'courier',
        start: () => this.couriers.start(config),
        stop: () => this.couriers.close(),
      },
      {
        name: 'queue',
        start: async () => {
          this.resumed = await this.queue.start();
        },
        stop: async () => {
          // Messages only waiting for an upstream's pace give up their turn (they stay queued).
          this.couriers.stopping();
          await this.queue.stop();
        },
      },
      { name: 'retention sweeper', start: () => this.retention.start(), stop: () => this.retention.stop() },
      // After the queue: what sendmail left while the relay was down goes out now.
      { name: 'maildrop pickup', start: () => this.pickup.start(), stop: () => this.pickup.stop() },
      {
        name: 'listeners',
        start: () => this.startListeners(),
        stop: () => Promise.all(this.listeners.map((l) => l.close(this.current.config.shutdown.grace))),
      },
      {
        name: 'certificate watch',
        start: () => {
          if (config.tls?.watch) this.certs.watch(() => this.current.config.tls);
        },
        stop: () => this.certs.close(),
      },
      {
        name: 'control socket',
        start: () =>
          this.control.listen().catch((err: Error) =>
            log.error(
              `no control socket, the queue commands of the CLI cannot reach this relay: ${err.message}`,
              {
                event: 'control_failed',
              },
            ),
          ),
        stop: () => this.control.close(),
      },
      {
        name: 'readiness checks',
        // They serve /readyz: without a metrics listener nobody asks, so no ESP is probed.
        start: () => {
          if (this.metrics) this.readiness.start();
        },
        stop: () => this.readiness.stop(),
      },
    ];
  }

  async start(): Promise<void> {
    const { config, log } = this.options;
    await this.lifecycle.start();
    log.info(`smarthost started (config: ${config.source})`, {
      event: 'started',
      queued: this.resumed,
      spool: config.spool.dir,
      maxAge: formatDuration(config.queue.maxAge),
    });
  }

  private async initSpool(): Promise<void> {
    const { log } = this.options;
    const { tightened, ...swept } = await this.spool.init();
    for (const { dir, was } of tightened) {
      log.warn(`spool folder ${dir} was mode ${was}, open to other users: tightened to 0700`, {
        event: 'spool_mode_tightened',
        dir,
        was,
      });
    }
    if (swept.tmpFiles || swept.orphanBodies || swept.interruptedMoves || swept.reunited) {
      log.info('swept leftovers of an interrupted run', { event: 'spool_swept', ...swept });
    }
  }

  private async startListeners(): Promise<void> {
    const { config, log } = this.options;
    const keyPair = await this.certs.load(config);
    const policy = this.current.policy;
    for (const listen of config.listen) {
      const listener = new Listener(
        listen,
        config.hostname,
        {
          policy: () => this.current.policy,
          spool: this.spool,
          log,
          accepted: (queued) => this.accepted(queued),
          refused: (reason, client, source) => {
            this.traffic.refused(reason, client, source);
            this.cluster?.traffic.refused(reason, client, source);
            this.metrics?.refused(reason, client, source);
          },
          isShuttingDown: () => this.shuttingDown,
        },
        keyPair,
        {
          maxSize: policy.maxAdvertisedSize,
          maxClients: config.limits.maxConnections,
          closeTimeout: config.shutdown.grace,
        },
      );
      await listener.listen();
      this.listeners.push(listener);
      this.metrics?.attachListener(probeOf(listener));
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
  }

  /**
   * Swaps in a new config: new connections and transactions see it at once; open sessions go
   * on. Changed upstreams get a new courier (see swapCourier); unchanged ones keep theirs, with
   * its pooled connections, pace and health. Throws, changing nothing, when the new upstreams
   * cannot be set up.
   */
  applyConfig(
    config: Config,
    reason = 'reload',
  ): { upstreamChanged?: string; certificate?: CertificateReload } {
    // A rotated password or a renewed CA at the same path counts as a change (courier-switch.ts).
    const upstreamChanged = this.shuttingDown ? undefined : this.couriers.apply(config);
    this.current = {
      config,
      policy: new PolicyEngine(config, {
        upstreamSizeLimit: this.upstreamSizeLimit,
        previous: this.current.policy,
      }),
    };
    for (const listener of this.listeners) listener.setMaxSize(this.current.policy.maxAdvertisedSize);
    applyLogOptions(this.options.log, config.log);
    // Every reload re-reads the certificate, changed config or not: a certbot deploy hook
    // runs `smarthost reload` after renewing files at the same paths.
    const certificate = this.certs.reload(config, reason);
    return { upstreamChanged, certificate };
  }

  /** Stops accepting, lets open sessions finish (up to the grace period), stops delivery. */
  async stop(): Promise<void> {
    if (this.shuttingDown) return;
    this.shuttingDown = true;
    const { log } = this.options;
    log.info('shutting down: no new connections, finishing open sessions and deliveries', {
      event: 'stopping',
    });
    await this.lifecycle.stop();
    log.info('stopped', { event: 'stopped' });
  }
}
