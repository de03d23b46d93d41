// Capture mode: with no upstream configured, each message that would be sent is written to
// outbox/<id>.eml with its envelope in outbox/<id>.json, so a first run can be tried safely.
import { createWriteStream } from 'node:fs';
import { chmod, copyFile } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import path from 'node:path';
import type { Courier, MessageBody, RecipientResult } from './courier.js';
import type { QueueEntry } from '../spool/entry.js';
import { fsyncDir, fsyncFile, replaceFileDurably, writeFileDurably } from '../spool/fsync.js';
import { makePrivateDir, PRIVATE_FILE_MODE } from '../spool/modes.js';
import { readBody } from '../spool/one-file.js';

export class OutboxCourier implements Courier {
  readonly description: string;

  constructor(private readonly outboxDir: string) {
    this.description = `capture mode: messages are written to ${outboxDir}, nothing is sent`;
  }

  async send(entry: QueueEntry, recipients: string[], source: MessageBody): Promise<RecipientResult[]> {
    await makePrivateDir(this.outboxDir);
    const body = path.join(this.outboxDir, `${entry.id}.eml`);
    if (source.data) {
      await writeFileDurably(body, source.data);
    } else if (source.length !== undefined) {
      // A one-file message (spool/one-file.ts): its body is the start of the file.
      await pipeline(readBody(source), createWriteStream(body, { mode: PRIVATE_FILE_MODE }));
      await fsyncFile(body);
    } else {
      await copyFile(source.path, body);
      // A copy keeps the source's mode: a body queued by an older version may be 0640.
      await chmod(body, PRIVATE_FILE_MODE);
      await fsyncFile(body);
    }
    const envelope = {
      id: entry.id,
      from: entry.from,
      to: recipients,
      source: entry.source,
      size: entry.size,
    };
    await replaceFileDurably(
      `${body}.tmp`,
      path.join(this.outboxDir, `${entry.id}.json`),
      `${JSON.stringify(envelope, null, 2)}\n`,
    );
    await fsyncDir(this.outboxDir);
    return recipients.map((recipient) => ({
      recipient,
      outcome: 'delivered' as const,
      reply: `captured to ${body}`,
      upstream: 'outbox',
    }));
  }

  async close(): Promise<void> {}
}
