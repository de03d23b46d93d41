// The courier hands a queued message to the next hop and says, per recipient, what happened.
// Every outcome is classified: delivered, temporary (retry later) or permanent (bounce).
import type { QueueEntry } from '../spool/entry.js';
import type { Decision } from './classify.js';
import type { MessageBody } from '../spool/spool.js';

export type { MessageBody };

export type Outcome = 'delivered' | 'temporary' | 'permanent';

export interface RecipientResult {
  recipient: string;
  outcome: Outcome;
  /** The upstream's reply, or the error, in words. */
  reply: string;
  /** Which upstream (name) answered, or was tried last; 'outbox' in capture mode. */
  upstream?: string;
  /**
   * For a failure the upstream answered or caused: what it affects and how (classify.ts).
   * Absent for a delivery, and for a failure of the relay itself (counted as the message's).
   */
  decision?: Decision;
}

/**
 * The same temporary outcome for every recipient: an attempt that could not be carried out, or
 * not to the end. The message stays queued and is retried.
 */
export function allTemporary(recipients: string[], reply: string, upstream?: string): RecipientResult[] {
  return recipients.map((recipient) => ({
    recipient,
    outcome: 'temporary' as const,
    reply,
    ...(upstream === undefined ? {} : { upstream }),
  }));
}

export interface Courier {
  /** A name for the start-up log: where mail goes. */
  readonly description: string;
  send(entry: QueueEntry, recipients: string[], body: MessageBody): Promise<RecipientResult[]>;
  /** Background work once the relay runs (upstream checks). */
  start?(): void;
  /** The relay is shutting down: end sends that are only waiting (for the pace) quickly. */
  stopping?(): void;
  /**
   * The largest message the next hop can take for this envelope sender (any sender when
   * absent), undefined while unknown or unlimited.
   */
  sizeLimit?(sender?: string): number | undefined;
  close(): Promise<void>;
}
