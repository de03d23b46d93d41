// Who gets told when mail cannot be delivered, and whether anyone is:
// - a recipient whose client said NOTIFY=NEVER, or NOTIFY without FAILURE (RFC 3461), is never
//   bounced; the message is still kept in failed/ as a dead letter;
// - the envelope sender when it left as the client gave it (an in-domain sender gets its own
//   bounce);
// - `bounces.to` when the relay rewrote the sender (senders.default or a source's `sender:`: a
//   no-reply address would swallow it) or the sender is empty (<>);
// - a bounce that cannot be delivered is never bounced again: it stays once as a dead letter
//   and the log says why.
// A bounce is an ordinary queued message with the null sender, so it is as durable as any.
import type { Config } from '../config/load.js';
import type { Logger } from '../log.js';
import { newQueueId, type QueueEntry } from '../spool/entry.js';
import { KEPT_BODY_MAX, type QueuedMessage, type Spool } from '../spool/spool.js';
import { buildDsn, readHeaderBlock, type FailedRecipient } from './dsn.js';

export class Bouncer {
  constructor(
    private readonly spool: Spool,
    private readonly config: () => Config,
    private readonly log: Logger,
  ) {}

  /** Where the notification goes, or why nobody is told. */
  target(entry: QueueEntry): { to: string } | { none: string } {
    const admin = this.config().bounces.to;
    if (entry.bounceOf) {
      return { none: `it is itself a bounce (of ${entry.bounceOf}), and a bounce is never bounced` };
    }
    const rewritten = entry.from.toLowerCase() !== entry.originalFrom.toLowerCase();
    if (entry.from && !rewritten) return { to: entry.from };
    if (admin) return { to: admin };
    if (entry.from) {
      // Rewritten, and no admin address: the rewritten sender is all there is.
      return { to: entry.from };
    }
    return { none: 'the message has no sender (<>) and bounces.to is not set' };
  }

  /**
   * Queues a DSN for these recipients; resolves to the queued bounce (undefined if nobody to
   * tell), with its bytes when small, for its first attempt.
   */
  async bounce(entry: QueueEntry, allFailed: FailedRecipient[]): Promise<QueuedMessage | undefined> {
    const config = this.config();
    const failed = allFailed.filter((f) => wantsFailureNotice(entry, f.address));
    if (failed.length === 0) {
      this.log.info('no bounce: the client asked for no failure notice (NOTIFY)', {
        id: entry.id,
        event: 'bounce_not_requested',
        recipients: allFailed.length,
      });
      return undefined;
    }
    const target = this.target(entry);
    if ('none' in target) {
      this.log.warn(`bounce not sent: ${target.none}; the message is kept in failed/`, {
        id: entry.id,
        event: 'bounce_dropped',
        reason: target.none,
      });
      return undefined;
    }
    const to = target.to;
    if (to === entry.from && entry.from.toLowerCase() !== entry.originalFrom.toLowerCase()) {
      this.log.warn('bounce goes to the rewritten sender: set bounces.to so that it reaches a person', {
        id: entry.id,
        event: 'bounce_to_rewritten_sender',
        to,
      });
    }
    const { path: file, length } = this.spool.bodyOf(entry);
    const headers = await readHeaderBlock(file, length).catch(() => Buffer.alloc(0));
    const id = newQueueId();
    const data = buildDsn({
      hostname: config.hostname,
      queueId: entry.id,
      to,
      arrivalDate: new Date(entry.createdAt),
      failed: failed.map((f) => ({ ...f, orcpt: orcptOf(entry, f.address) })),
      originalHeaders: headers,
      envid: entry.dsn?.envid,
    });
    const now = Date.now();
    const stored = await this.spool.acceptBuffer(data, {
      id,
      from: config.bounces.from,
      originalFrom: config.bounces.from,
      recipients: [{ address: to, status: 'pending' }],
      source: 'bounce',
      client: { address: '127.0.0.1' },
      createdAt: now,
      attempts: 0,
      nextAttemptAt: now,
      bounceOf: entry.id,
    });
    return data.length <= KEPT_BODY_MAX ? { entry: stored, body: data } : { entry: stored };
  }
}

function recipientState(entry: QueueEntry, address: string) {
  const key = address.toLowerCase();
  return entry.recipients.find((r) => r.address.toLowerCase() === key);
}

/** RFC 3461: no NOTIFY means a notice on failure; NOTIFY=NEVER or one without FAILURE means none. */
function wantsFailureNotice(entry: QueueEntry, address: string): boolean {
  const notify = recipientState(entry, address)?.notify;
  return !notify || notify.includes('FAILURE');
}

function orcptOf(entry: QueueEntry, address: string): string | undefined {
  return recipientState(entry, address)?.orcpt;
}
