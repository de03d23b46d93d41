// Whether an upstream is worth trying now. A failure of the upstream itself (connection refused,
// greeting, TLS or AUTH failure, a 421, a lost connection: classify.ts; never one message's 4xx
// to MAIL, RCPT or DATA) marks the upstream down for a back-off
// period that doubles with each failure in a row, up to a maximum; while down it is skipped,
// and once the period is over the next message tries it again. One success brings it back.

export interface BackoffSettings {
  /** The first down period. */
  initialMs: number;
  /** The longest down period. */
  maxMs: number;
}

export class UpstreamHealth {
  private failures = 0;
  private downUntil = 0;

  constructor(private readonly backoff: BackoffSettings) {}

  isDown(now: number): boolean {
    return now < this.downUntil;
  }

  /** Failures in a row since the last success. */
  get consecutiveFailures(): number {
    return this.failures;
  }

  /**
   * Records a failure. Returns the new down period, or undefined when it was down already
   * (sends that were in flight when it went down do not lengthen the back-off).
   */
  failed(now: number): number | undefined {
    if (this.isDown(now)) return undefined;
    const ms = Math.min(this.backoff.initialMs * 2 ** this.failures, this.backoff.maxMs);
    this.failures++;
    this.downUntil = now + ms;
    return ms;
  }

  /** Records a success; true when this ends a run of failures (it is back). */
  succeeded(): boolean {
    const wasFailing = this.failures > 0;
    this.failures = 0;
    this.downUntil = 0;
    return wasFailing;
  }
}
