// DATA for one transaction: the message streams through receive.ts into the spool under the
// policy's plan (sender rewriting, size limit); resolves to the queued item, or throws the
// SmtpError to reply with. Logs what an admin needs about a refused or accepted message.
import type { SMTPServerSession } from 'smtp-server';
import type { Logger } from '../log.js';
import type { ReceivePlan } from '../policy/transaction.js';
import { newQueueId, type QueueEntry } from '../spool/entry.js';
import type { QueuedMessage, Spool } from '../spool/spool.js';
import { envelopeOf } from './address-command.js';
import { SmtpError } from './errors.js';
import { receiveMessage } from './receive.js';

export async function receiveData(
  stream: NodeJS.ReadableStream & { sizeExceeded?: boolean },
  session: SMTPServerSession,
  plan: ReceivePlan,
  context: { hostname: string; spool: Spool; log: Logger },
): Promise<QueuedMessage> {
  const { source, sender } = plan;
  const envelope = envelopeOf(session);
  try {
    return await receiveMessage(
      stream as never,
      {
        id: newQueueId(),
        source,
        originalFrom: plan.originalFrom,
        from: sender.from,
        editHeaders: sender.editHeaders,
        recipients: envelope.recipients,
        envelope: envelope.fields,
        client: {
          address: session.remoteAddress,
          helo: session.hostNameAppearsAs || undefined,
          user: session.user,
          tls: session.secure,
        },
        hostname: context.hostname,
        sizeLimit: plan.sizeLimit,
        sizeError: plan.sizeError,
      },
      context.spool,
    );
  } catch (err) {
    if (stream.sizeExceeded) throw plan.sizeError();
    if (!(err instanceof SmtpError)) {
      context.log.error('could not queue a message', { event: 'spool_error', error: (err as Error).message });
    } else if (err.reason === 'disk_full' || err.reason === 'spool_error') {
      context.log.error('could not queue a message', {
        event: 'spool_error',
        error: ((err as { cause?: Error }).cause ?? err).message,
      });
    }
    throw err;
  }
}

/** The log lines of an accepted message (SMTP, or a script's through sendmail: `extra` says who). */
export function logAccepted(
  log: Logger,
  entry: QueueEntry,
  plan: Pick<ReceivePlan, 'source' | 'sender' | 'originalFrom'>,
  extra: { uid?: number } = {},
): void {
  const { source, sender } = plan;
  log.info('accepted', {
    id: entry.id,
    event: 'accepted',
    client: entry.client.address,
    source: source.name,
    ...extra,
    from: entry.from,
    recipients: entry.recipients.length,
    size: entry.size,
  });
  if (sender.envelopeRewritten || sender.headerChanges.length) {
    log.info('sender rewritten', {
      id: entry.id,
      event: 'sender_rewritten',
      source: source.name,
      envelope: sender.envelopeRewritten ? { from: plan.originalFrom, to: sender.from } : undefined,
      headers: sender.headerChanges.length ? sender.headerChanges : undefined,
    });
  }
}
