// Who gets told when mail cannot be delivered: the envelope sender, or `bounces.to` when the
// sender is empty (the message was itself a bounce, or came from <>) or the bounce failed.
// A bounce is an ordinary queued message with the null sender, so it is as durable as any.
import type { Config } from '../config/load.js';
import type { Logger } from '../log.js';
import { newQueueId, type QueueEntry } from '../spool/entry.js';
import type { Spool } from '../spool/spool.js';
import { buildDsn, readHeaderBlock, type FailedRecipient } from './dsn.js';

export class Bouncer {
  constructor(
    private readonly spool: Spool,
    private readonly config: () => Config,
    private readonly log: Logger,
  ) {}

  /** Where the notification goes, or undefined when nobody can be told. */
  target(entry: QueueEntry, failed: FailedRecipient[]): string | undefined {
    const admin = this.config().bounces.to;
    if (entry.bounceOf) {
      // A bounce that failed goes to the admin, unless it was already going there.
      if (admin && !failed.some((f) => f.address.toLowerCase() === admin.toLowerCase())) return admin;
      return undefined;
    }
    return entry.from || admin;
  }

  /** Queues a DSN for these recipients; resolves to its queue id (undefined if nobody to tell). */
  async bounce(entry: QueueEntry, failed: FailedRecipient[]): Promise<QueueEntry | undefined> {
    const config = this.config();
    const to = this.target(entry, failed);
    if (!to) {
      this.log.warn('bounce not sent: no one to notify (set bounces.to)', {
        id: entry.id,
        event: 'bounce_dropped',
      });
      return undefined;
    }
    const headers = await readHeaderBlock(this.spool.bodyPath(entry.id)).catch(() => Buffer.alloc(0));
    const id = newQueueId();
    const data = buildDsn({
      hostname: config.hostname,
      queueId: entry.id,
      to,
      arrivalDate: new Date(entry.createdAt),
      failed,
      originalHeaders: headers,
    });
    const now = Date.now();
    return this.spool.acceptBuffer(data, {
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
  }
}
