// Which courier delivery attempts use now, and the hand-over when a reload changes the
// upstreams: new attempts take the new courier at once (fresh pacing, health, connections and
// credentials); the old one is closed once the attempts in flight have ended, so no delivery in
// progress is cut. Capture mode (no upstream) is the OutboxCourier.
import type { Config } from '../config/load.js';
import { courierSettings } from '../config/reload-table.js';
import type { Logger } from '../log.js';
import type { SharedPace } from '../cluster/pace.js';
import type { Courier } from './courier.js';
import { ThreadedCourier } from './courier-thread.js';
import { OutboxCourier } from './outbox-courier.js';

export interface CourierSwitchDeps {
  log: Logger;
  /** The EHLO name: the one from the start (`hostname` takes effect after a restart). */
  hostname: string;
  outboxDir: string;
  /** Cluster mode: each upstream's pace, shared by all relays (src/cluster/pace.ts). */
  sharedPace?: (upstream: string) => SharedPace;
  /** The queue's view the hand-over needs (a getter: the queue is built after the switch). */
  queue: () => { settled(): Promise<void>; retryNow(): number };
  /** Told of every courier put in service (readiness, metrics). */
  inService: (courier: Courier, config: Config) => void;
}

export class CourierSwitch {
  private courier: Courier;
  private fingerprint: string;
  /** Couriers replaced by a reload, closed once the attempts that may use them have ended. */
  private readonly retiring = new Map<Courier, Promise<void>>();
  private started = false;

  constructor(
    config: Config,
    private readonly deps: CourierSwitchDeps,
    /** Replaces the courier chosen from the config (tests). */
    given?: Courier,
  ) {
    this.courier = given ?? this.build(config);
    this.fingerprint = courierSettings(config);
  }

  /** The courier new delivery attempts use. */
  get current(): Courier {
    return this.courier;
  }

  get capturing(): boolean {
    return this.courier instanceof OutboxCourier;
  }

  /** Puts the first courier in service (the relay's start). */
  start(config: Config): void {
    this.started = true;
    this.putInService(this.courier, config);
  }

  /**
   * A new config: when its courier settings differ (the `courier` keys of the reload table,
   * secrets and CA text included), a new courier takes over. Returns its description then.
   */
  apply(config: Config): string | undefined {
    const fingerprint = courierSettings(config);
    if (fingerprint === this.fingerprint) return undefined;
    const next = this.build(config);
    this.fingerprint = fingerprint;
    this.swap(next, config);
    return next.description;
  }

  /** Shutdown begins: messages only waiting for an upstream's pace give up their turn. */
  stopping(): void {
    this.courier.stopping?.();
    for (const old of this.retiring.keys()) old.stopping?.();
  }

  async close(): Promise<void> {
    await this.courier.close();
    await Promise.all(this.retiring.values());
  }

  private build(config: Config): Courier {
    const { sharedPace } = this.deps;
    return config.upstreams.length
      ? new ThreadedCourier(config.upstreams, this.deps.hostname, { log: this.deps.log, sharedPace })
      : new OutboxCourier(this.deps.outboxDir);
  }

  /** Logs where mail goes (capture mode loudly) and starts the courier's background checks. */
  private putInService(courier: Courier, config: Config): void {
    const { log } = this.deps;
    this.deps.inService(courier, config);
    if (courier instanceof OutboxCourier) {
      log.warn('*** CAPTURE MODE: no upstream is configured, nothing will be sent ***', {
        event: 'capture_mode',
      });
      log.warn(
        `messages are written to ${this.deps.outboxDir} instead; set upstream: in the config to deliver`,
        { event: 'capture_mode' },
      );
    } else {
      log.info(courier.description, { event: 'upstream' });
      // Checks each upstream in the background and learns its SIZE (enforced at accept time).
      courier.start?.();
    }
  }

  private swap(next: Courier, config: Config): void {
    const { log } = this.deps;
    const old = this.courier;
    const toCapture = next instanceof OutboxCourier && !(old instanceof OutboxCourier);
    const fromCapture = old instanceof OutboxCourier && !(next instanceof OutboxCourier);
    if (toCapture) {
      log.warn('*** upstream removed by the reload: switching to CAPTURE MODE, nothing will be sent ***', {
        event: 'upstream_changed',
      });
    } else if (fromCapture) {
      log.warn('*** capture mode ends: the reload configured an upstream, mail is sent from now on ***', {
        event: 'upstream_changed',
      });
    } else {
      log.info('upstream settings changed: new deliveries use the new settings', {
        event: 'upstream_changed',
      });
    }
    // The attempts that may be using the old courier: those in flight now.
    const queue = this.deps.queue();
    const oldAttempts = queue.settled();
    this.courier = next;
    if (this.started) {
      this.putInService(next, config);
      // Mail deferred by the old settings (a revoked key, a dead host) goes out now, not at its
      // next retry time, which may be hours away.
      const retried = queue.retryNow();
      if (retried) {
        log.info(`retrying ${retried} queued message(s) now through the new upstream settings`, {
          event: 'reload_retry',
          retried,
        });
      }
    }
    const retired = oldAttempts
      .then(() => old.close())
      .catch((err: Error) => {
        log.warn(`error while closing the previous upstream connections: ${err.message}`, {
          event: 'upstream_close_failed',
        });
      })
      .finally(() => this.retiring.delete(old));
    this.retiring.set(old, retired);
  }
}
