// The relay's own control commands: the queue ones. Others register theirs with
// registerHandler: `reload` (smarthost start), `stats` and `metrics` (the traffic statistics).
import type { DeliveryQueue } from '../queue/delivery-queue.js';
import type { Spool } from '../spool/spool.js';
import { ControlRefusal } from './protocol.js';
import { QueueAdmin } from './queue-admin.js';
import type { ControlServer } from './server.js';

function idList(args: Record<string, unknown>): string[] {
  const ids = args.ids;
  if (!Array.isArray(ids) || ids.length === 0 || !ids.every((id) => typeof id === 'string')) {
    throw new ControlRefusal('expected "ids": a list of queue ids');
  }
  return ids as string[];
}

export function registerRelayHandlers(
  server: ControlServer,
  relay: { spool: Spool; queue: DeliveryQueue },
): void {
  const admin = new QueueAdmin(relay.spool, relay.queue);
  server.registerHandler('queue.list', () => admin.list());
  server.registerHandler('queue.show', (args) => admin.show(String(args.id)));
  server.registerHandler('queue.retry', (args) => admin.retry(args.all === true ? 'all' : idList(args)));
  server.registerHandler('queue.delete', (args) => admin.delete(idList(args)));
  server.registerHandler('queue.failed', () => admin.failed());
  server.registerHandler('queue.requeue', (args) => admin.requeue(idList(args)));
}
