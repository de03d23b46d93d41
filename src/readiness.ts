// Readiness (GET /readyz): whether this relay should be sent mail now, for a load balancer,
// keepalived or Kubernetes to move traffic to a node that can deliver. Not ready when it is not
// alive (/healthz), when every upstream is down, or when the queue is not moving (its oldest
// message is older than `health.maxQueueAge`). Capture mode can always take mail.
//
// Liveness (/healthz) is a different question: an unreachable ESP is no reason to restart the
// relay, so it stays out of /healthz.
//
// The upstreams' state comes from the courier's 'upstream' events (down after a failure of the
// upstream itself, up after a success; see upstream/health.ts). An idle relay learns nothing
// from traffic, so every `health.checkInterval` without a delivery, and while an upstream is
// down, the courier is asked to check its upstreams again (a connect and login, as at start):
// an ESP that stops is seen within about one interval, and one that comes back too, even with
// nothing queued (a node no balancer sends mail to would otherwise never find out).
import { EventEmitter } from 'node:events';
import type { Config } from './config/load.js';
import { formatDuration } from './config/units.js';
import type { Courier } from './delivery/courier.js';
import type { UpstreamEvent } from './delivery/upstream-client.js';
import type { Logger } from './log.js';
import type { AttemptEvent, DeliveryQueue } from './queue/delivery-queue.js';
import type { Spool } from './spool/spool.js';

export interface Readiness {
  ready: boolean;
  /** Why not, in one line. */
  reason?: string;
}

export interface ReadinessDeps {
  spool: Spool;
  queue: DeliveryQueue;
  log: Logger;
  config: () => Config;
  /** True in capture mode (no upstream: mail goes to the outbox). */
  capture: () => boolean;
  /** The liveness problems (/healthz), which make the relay not ready too. */
  liveness?: () => Promise<string[]>;
}

interface UpstreamState {
  down: boolean;
  reason?: string;
}

export class ReadinessCheck {
  private courier: Courier | undefined;
  private upstreams = new Map<string, UpstreamState>();
  private lastDelivery = Date.now();
  private timer: NodeJS.Timeout | undefined;
  private stopped = false;
  /** The last answer logged, so a change of readiness is logged once. */
  private lastLogged: string | undefined = '';

  constructor(private readonly deps: ReadinessDeps) {
    deps.queue.on('attempt', ({ results }: AttemptEvent) => {
      if (results.some((r) => r.outcome === 'delivered')) this.lastDelivery = Date.now();
    });
  }

  /** The courier in use now (at start and after a reload that changed the upstreams). */
  track(courier: Courier): void {
    this.courier = courier;
    this.upstreams = new Map(this.deps.config().upstreams.map((u) => [u.name, { down: false }]));
    if (courier instanceof EventEmitter) {
      courier.on('upstream', (event: UpstreamEvent) => {
        // A courier replaced by a reload may still report: not about the upstreams in use.
        if (courier !== this.courier) return;
        if (event.state === 'down') this.upstreams.set(event.upstream, { down: true, reason: event.reason });
        else if (event.state === 'up') this.upstreams.set(event.upstream, { down: false });
      });
    }
  }

  /** Starts the periodic upstream checks (see the top of this file). */
  start(): void {
    this.stopped = false;
    this.schedule();
  }

  private schedule(): void {
    if (this.stopped) return;
    // Read each time: `health.checkInterval` is live on reload.
    this.timer = setTimeout(() => {
      this.tick();
      this.schedule();
    }, this.deps.config().health.checkInterval);
    this.timer.unref();
  }

  private tick(): void {
    if (this.deps.capture() || !this.courier) return;
    const idle = Date.now() - this.lastDelivery >= this.deps.config().health.checkInterval;
    const anyDown = [...this.upstreams.values()].some((u) => u.down);
    // The courier's start() checks every upstream (connect, login, SIZE), once at a time each.
    if (idle || anyDown) this.courier.start?.();
    void this.check().then((r) => this.logChange(r));
  }

  stop(): void {
    this.stopped = true;
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
  }

  /** What /readyz answers. */
  async check(): Promise<Readiness> {
    const problems = (await this.deps.liveness?.()) ?? [];
    if (problems.length) return { ready: false, reason: problems.join('; ') };
    if (!this.deps.capture()) {
      const states = [...this.upstreams.entries()];
      if (states.length && states.every(([, s]) => s.down)) {
        const which = states.map(([name, s]) => `${name}: ${s.reason ?? 'failing'}`).join('; ');
        return { ready: false, reason: `every upstream is down (${which})` };
      }
    }
    const maxAge = this.deps.config().health.maxQueueAge;
    if (maxAge > 0) {
      const age = await this.oldestAge();
      if (age > maxAge) {
        return {
          ready: false,
          reason: `the queue is not moving: its oldest message is ${formatDuration(age)} old (health.maxQueueAge ${formatDuration(maxAge)})`,
        };
      }
    }
    return { ready: true };
  }

  private logChange(result: Readiness): void {
    const key = result.ready ? undefined : result.reason;
    if (key === this.lastLogged) return;
    // The first answer is logged only when it is "not ready".
    const first = this.lastLogged === '';
    this.lastLogged = key;
    if (result.ready) {
      if (!first) this.deps.log.info('ready again: /readyz answers 200', { event: 'ready' });
    } else {
      this.deps.log.warn(`not ready: /readyz answers 503: ${result.reason}`, {
        event: 'not_ready',
        reason: result.reason,
      });
    }
  }

  /** How long the oldest queued message has waited (0 when the queue is empty), in ms. */
  private async oldestAge(): Promise<number> {
    return await this.deps.spool.oldestAgeMs();
  }
}
