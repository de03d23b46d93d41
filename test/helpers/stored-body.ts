// A queued message's body as the courier reads it: the start of a one-file message (<id>.msg),
// or a whole <id>.eml.
import { readBody } from '../../src/spool/one-file.js';
import type { QueueEntry } from '../../src/spool/entry.js';
import type { Spool } from '../../src/spool/spool.js';

export async function storedBody(spool: Spool, entry: QueueEntry): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of readBody(spool.bodyOf(entry)) as AsyncIterable<Buffer>) chunks.push(chunk);
  return Buffer.concat(chunks);
}
