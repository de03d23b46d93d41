// Capture mode: with no upstream configured, each message that would be sent is written to
// outbox/<id>.eml with its envelope in outbox/<id>.json, so a first run can be tried safely.
import { copyFile, mkdir } from 'node:fs/promises';
import path from 'node:path';
import type { Courier, MessageBody, RecipientResult } from './courier.js';
import type { QueueEntry } from '../spool/entry.js';
import { fsyncDir, fsyncFile, replaceFileDurably, writeFileDurably } from '../spool/fsync.js';

export class OutboxCourier implements Courier {
  readonly description: string;

  constructor(private readonly outboxDir: string) {
    this.description = `capture mode: messages are written to ${outboxDir}, nothing is sent`;
  }

  async send(entry: QueueEntry, recipients: string[], source: MessageBody): Promise<RecipientResult[]> {
    await mkdir(this.outboxDir, { recursive: true });
    const body = path.join(this.outboxDir, `${entry.id}.eml`);
    if (source.data) {
      await writeFileDurably(body, source.data);
    } else {
      await copyFile(source.path, body);
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
