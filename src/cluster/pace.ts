// An upstream's pace shared by every relay (cluster mode): the Pacer (src/upstream/pacer.ts)
// asks for a GCRA reservation before each start, so N relays together keep to the ESP's
// `rateLimit`, and the throttling slowdown one relay saw slows them all. No answer (Redis
// degraded) leaves the Pacer's own pace in charge.
import type { ClusterClient } from './client.js';

export interface PaceRequest {
  /** The interval between two starts at the configured pace (no slowdown), ms. */
  intervalMs: number;
  burst: number;
  /** This relay's throttling slowdown (1: none). */
  factor: number;
  /** Whether `factor` changed since it was last sent (it is then stored for all). */
  publish: boolean;
  /** How long a stored slowdown lasts when no relay renews it, ms. */
  slowTtlMs: number;
}

export interface PaceReservation {
  /** 0: one start is reserved, go now; else try again after this many ms. */
  wait: number;
  /** The slowdown in force over all relays. */
  factor: number;
}

export interface SharedPace {
  /** undefined when there is no shared answer: the local pace decides alone. */
  reserve(request: PaceRequest): Promise<PaceReservation | undefined>;
}

/** The shared pace of one upstream (by its name) in Redis. */
export function redisPace(client: ClusterClient, upstream: string): SharedPace {
  const tat = client.keys.paceTat(upstream);
  const slow = client.keys.paceSlow(upstream);
  return {
    async reserve(request) {
      const reply = await client.run((r) =>
        r.smarthostReservePace(
          tat,
          slow,
          request.intervalMs,
          request.burst,
          request.factor,
          request.publish ? '1' : '0',
          Math.ceil(request.slowTtlMs),
        ),
      );
      return reply ? { wait: Number(reply[0]), factor: Number(reply[1]) || 1 } : undefined;
    },
  };
}
