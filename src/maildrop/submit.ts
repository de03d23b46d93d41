// A message submitted on this host (`smarthost sendmail`), taken into the queue as the local
// source `sendmail`: the same policy checks as MAIL and RCPT (its own policy from `sendmail:`
// over `defaults:`), the same sender rewriting and the same receive path as SMTP (size guard,
// line endings, header limits and edits, fsync before it counts as queued).
import type { Readable } from 'node:stream';
import type { Logger } from '../log.js';
import type { PolicyEngine } from '../policy/engine.js';
import type { Source } from '../policy/sources.js';
import { planSender } from '../rewrite/sender.js';
import { SmtpError } from '../smtp/errors.js';
import { receiveMessage } from '../smtp/receive.js';
import { logAccepted } from '../smtp/data.js';
import { newQueueId, type QueueEntry } from '../spool/entry.js';
import type { Spool } from '../spool/spool.js';

export interface LocalMessage {
  from: string;
  recipients: string[];
  /** The message's length, known before it is read. */
  size: number;
  /** Who wrote it: the owner of the maildrop file. */
  uid: number;
}

export interface SubmitDeps {
  policy: PolicyEngine;
  spool: Spool;
  log: Logger;
}

export function localSubmissionOff(): SmtpError {
  return new SmtpError(
    550,
    '5.7.1',
    'Local submission (smarthost sendmail) is turned off in the relay config (sendmail.enabled: false)',
    'not_allowed',
  );
}

/** The source `sendmail`; turned off in the config (`sendmail.enabled: false`), a refusal. */
export function localSource(policy: PolicyEngine): Source {
  const source = policy.sources.local;
  if (!source) throw localSubmissionOff();
  return source;
}

/**
 * Checks the envelope against the policy of the source `sendmail`, before the message is read.
 * Throws the SmtpError of the first refusal. Takes the rate-limit tokens, as MAIL and RCPT do.
 */
export async function checkLocalEnvelope(
  policy: PolicyEngine,
  message: Omit<LocalMessage, 'uid'>,
): Promise<void> {
  const source = localSource(policy);
  await policy.checkSender(source, message.from, message.size);
  // One at a time, in order, as RCPT commands would be (cluster mode: each a Redis round trip).
  for (const [i, rcpt] of message.recipients.entries()) await policy.checkRcpt(source, rcpt, i + 1);
}

/** Checks, then streams `body` into the spool. Resolves the queued entry once it is on disk. */
export async function submitLocal(
  body: Readable,
  message: LocalMessage,
  deps: SubmitDeps,
): Promise<QueueEntry> {
  const { policy, spool, log } = deps;
  await checkLocalEnvelope(policy, message);
  const source = policy.sources.local!;
  const sender = planSender(message.from, source.policy);
  const sizeLimit = policy.messageSizeLimit(source, sender.from);
  const { entry } = await receiveMessage(
    body,
    {
      id: newQueueId(),
      source,
      originalFrom: message.from,
      from: sender.from,
      editHeaders: sender.editHeaders,
      recipients: message.recipients,
      client: { address: 'local', user: `uid ${message.uid}`, tls: false, localUid: message.uid },
      hostname: policy.config.hostname,
      sizeLimit,
      sizeError: () => policy.sizeError(source, sizeLimit, sender.from),
    },
    spool,
  );
  logAccepted(log, entry, { source, sender, originalFrom: message.from }, { uid: message.uid });
  return entry;
}
