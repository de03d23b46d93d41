// The "decide" step of a delivery attempt (delivery-queue.ts): from the message's state and the
// courier's per-recipient results, what becomes of each recipient, whether the attempt counts,
// and when the next one is. No I/O: the queue applies the result (spool, bounce) and reports it.
//
// Retry timing: the next attempt follows `queue.retry` exactly (a `2s` schedule retries in
// about 2 s, ±10 % jitter), whatever the upstream's health. An attempt counts (a step along the
// schedule, `attempts`) only when the message's own fate was decided: a delivery, a refusal, or
// a 4xx to its MAIL, RCPT or DATA. When the upstream failed (connection, TLS, AUTH, 421, a lost
// connection), asked to slow down, or the message was not sent at all (shutdown while it waited
// for the pace), the attempt does not count: the message is retried at the same step of its
// schedule, so an outage never uses up its attempts. Only `queue.maxAge` ends its wait then.
import type { FailedRecipient } from '../bounce/dsn.js';
import { chargesMessage } from '../delivery/classify.js';
import type { RecipientResult } from '../delivery/courier.js';
import { pendingRecipients, type QueueEntry, type RecipientState } from '../spool/entry.js';
import { retryDelay } from './backoff.js';

export interface QueueTiming {
  maxAge: number;
  retry: number[];
}

export interface Settled {
  /** Recipients that failed for good in this attempt (refused, or expired): they bounce. */
  failedNow: FailedRecipient[];
  /** Recipients still to be tried, with the result that deferred them. */
  deferred: { result: RecipientResult; state: RecipientState }[];
  /** The message is past queue.maxAge: its deferred recipients failed now. */
  expired: boolean;
  /** The attempt was a step along the retry schedule (see the top of this file). */
  counted: boolean;
  /** No recipient is pending any more: the message leaves the queue. */
  done: boolean;
}

/** Whether an attempt's results count as an attempt of the message (see the top of this file). */
export function countsAsAttempt(results: RecipientResult[]): boolean {
  return results.some((r) => r.outcome !== 'temporary' || !r.decision || chargesMessage(r.decision));
}

/**
 * Applies `results` to `entry` (its recipients' states, attempts, last error and next attempt
 * time), and says what follows. Mutates `entry`, nothing else.
 */
export function settle(
  entry: QueueEntry,
  results: RecipientResult[],
  now: number,
  timing: QueueTiming,
  random: () => number = Math.random,
): Settled {
  const counted = results.length === 0 || countsAsAttempt(results);
  if (counted) entry.attempts++;
  const failedNow: FailedRecipient[] = [];
  const deferred: Settled['deferred'] = [];
  for (const result of results) {
    const state = entry.recipients.find((r) => r.address === result.recipient && r.status === 'pending');
    if (!state) continue;
    state.lastReply = result.reply;
    // The upstream that took it, or the one tried last (recipients may go by different routes).
    if (result.upstream !== undefined) state.upstream = result.upstream;
    if (result.outcome === 'delivered') {
      state.status = 'delivered';
    } else if (result.outcome === 'permanent') {
      state.status = 'failed';
      failedNow.push({ address: result.recipient, reply: result.reply });
    } else {
      deferred.push({ result, state });
    }
  }
  const expired = deferred.length > 0 && now - entry.createdAt >= timing.maxAge;
  if (expired) {
    for (const { result, state } of deferred) {
      state.status = 'failed';
      failedNow.push({ address: result.recipient, reply: result.reply, expired: true });
    }
  }
  const done = pendingRecipients(entry).length === 0;
  if (!done) {
    entry.lastError = deferred[0]?.result.reply;
    entry.nextAttemptAt = now + retryDelay(entry.attempts, timing.retry, random);
  }
  return { failedNow, deferred, expired, counted, done };
}
