// DATA: the message streams from the client through the size guard, the line-ending
// normaliser and the header rewriter straight into the spool. Nothing is held whole in memory.
// The order matters: line ends are made CRLF before the headers are read, so the header
// fields the policy edits are the ones every receiver downstream reads, and the spool holds
// the normalised form that leaves (nodemailer dot-stuffs it on the way out).
// Resolves to the queued item (its state, and a small body's bytes) once it is on disk; the
// caller answers 250 only then.
import { finished } from 'node:stream';
import type { Readable, Transform } from 'node:stream';
import type { Headers } from 'mailsplit';
import type { Source } from '../policy/sources.js';
import { HeaderRewriter } from '../rewrite/header-rewriter.js';
import { HeaderSectionError } from '../rewrite/header-section.js';
import { addMissingHeaders, receivedHeader } from '../rewrite/hygiene.js';
import { LineEndingNormaliser } from '../rewrite/line-endings.js';
import type { QueueEntry, RecipientState } from '../spool/entry.js';
import type { QueuedMessage, Spool } from '../spool/spool.js';
import { SizeGuard } from './size-guard.js';
import { formatSize, SmtpError, smtpErrors } from './errors.js';

export interface Transaction {
  id: string;
  source: Source;
  /** The envelope sender as the client gave it. */
  originalFrom: string;
  /** The envelope sender that will leave (after any rewriting). */
  from: string;
  recipients: string[];
  client: { address: string; helo?: string; user?: string; tls: boolean; localUid?: number };
  hostname: string;
  sizeLimit: number;
  /** The refusal for a message over sizeLimit (names whose limit it is). */
  sizeError?: () => Error;
  /** MAIL and RCPT parameters to keep (DSN, SMTPUTF8, BODY); recipients in the same order. */
  envelope?: Pick<QueueEntry, 'dsn' | 'smtpUtf8' | 'bodyType'> & { recipients: Partial<RecipientState>[] };
  /** Further header changes for this message (sender rewriting). */
  editHeaders?: (headers: Headers) => void;
}

export async function receiveMessage(
  stream: Readable,
  tx: Transaction,
  spool: Spool,
): Promise<QueuedMessage> {
  const guard = new SizeGuard(
    tx.sizeLimit,
    tx.sizeError ?? (() => smtpErrors.messageTooBig(tx.sizeLimit, tx.source.name)),
  );
  const rewriter = new HeaderRewriter({
    prepend: [
      receivedHeader({
        helo: tx.client.helo,
        clientAddress: tx.client.address,
        hostname: tx.hostname,
        queueId: tx.id,
        tls: tx.client.tls,
        authenticated: Boolean(tx.client.user),
        recipients: tx.recipients,
        localUid: tx.client.localUid,
      }),
    ],
    edit: (headers) => {
      tx.editHeaders?.(headers);
      addMissingHeaders(headers, tx.hostname, tx.id);
    },
    refuse: headerRefusal,
  });
  // pipe(), not pipeline(), from the client's stream: if the spool fails we must keep reading
  // the client's data to its end so the SMTP conversation stays in step, not destroy it.
  // But pipe() alone never ends the guard when the client hangs up in the middle of DATA
  // (smtp-server then destroys the stream: 'close' without 'end'): the spool would wait
  // forever with a half-written temp file open. So the end of the input is watched, and a
  // premature one fails the transfer, which removes the temp file.
  const inputDone = new Promise<Error | undefined>((resolve) =>
    finished(stream, { writable: false }, (err) => resolve(err ?? undefined)),
  );
  void inputDone.then((err) => {
    if (err && !guard.writableFinished) guard.destroy(clientGone(err));
  });
  stream.pipe(guard);
  const body = chain(guard, new LineEndingNormaliser(), rewriter);
  const now = Date.now();
  const { recipients: params = [], ...envelope } = tx.envelope ?? {};
  try {
    return await spool.acceptMessage(body, {
      ...envelope,
      id: tx.id,
      from: tx.from,
      originalFrom: tx.originalFrom,
      recipients: tx.recipients.map((address, i) => ({ ...params[i], address, status: 'pending' })),
      source: tx.source.name,
      client: { address: tx.client.address, helo: tx.client.helo, user: tx.client.user },
      createdAt: now,
      attempts: 0,
      nextAttemptAt: now,
    });
  } catch (err) {
    // The spool may have failed before reading anything: tear the transform chain down.
    body.destroy();
    await drain(stream, guard, inputDone);
    if (err instanceof SmtpError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOSPC' || code === 'EDQUOT') throw smtpErrors.diskFull();
    throw Object.assign(smtpErrors.spoolFailed(), { cause: err });
  }
}

/**
 * Pipes the stages into one another and returns the last, as stream.pipeline would, but without
 * its AbortController: pipeline() aborts that when the chain finishes, which builds an AbortError
 * and a premature-close error, stack traces included, for every message (about 2% of the CPU
 * under load). An error in any stage ends the last with it; the end of the last ends them all.
 */
function chain(...stages: [Transform, ...Transform[]]): Transform {
  const last = stages[stages.length - 1]!;
  for (let i = 0; i < stages.length - 1; i++) {
    stages[i]!.pipe(stages[i + 1]!);
    stages[i]!.on('error', (err) => last.destroy(err));
  }
  // The consumer (the spool) may start reading only after an early failure: it then finds the
  // error on the stream (readable.errored); until then this keeps it from being uncaught, as
  // pipeline()'s callback did.
  last.on('error', () => undefined);
  last.once('close', () => {
    for (const stage of stages) if (!stage.destroyed) stage.destroy();
  });
  return last;
}

/** Reads the client's data to its end (or until the client is gone), discarding it. */
async function drain(stream: Readable, guard: SizeGuard, inputDone: Promise<unknown>): Promise<void> {
  if (!stream.readableEnded && !stream.destroyed) {
    stream.unpipe(guard);
    stream.resume();
  }
  await inputDone;
}

/** The reply for a header section over its limits (the rewriter never passes one unread). */
function headerRefusal(err: Error): Error {
  if (!(err instanceof HeaderSectionError)) return err;
  if (err.problem === 'line') return smtpErrors.headerLineTooLong(err.limit);
  const what =
    err.problem === 'bytes'
      ? `the relay reads at most ${formatSize(err.limit)} of headers per message`
      : `the relay reads at most ${err.limit} header fields per message`;
  return smtpErrors.headerSectionTooLarge(what);
}

function clientGone(cause: Error): SmtpError {
  return Object.assign(
    new SmtpError(
      451,
      '4.3.0',
      'Connection closed before the message was received in full',
      'client_disconnected',
    ),
    { cause },
  );
}
