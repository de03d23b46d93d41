// The relay's own control commands: the queue ones, and `reload` / `reload.preview` (made by
// `smarthost start`, which owns the reloader). Others register theirs with registerHandler:
// `stats` and `metrics` (the traffic statistics).
import type { ConfigReloader } from '../config/watch.js';
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

/**
 * `reload`: re-read the config now (`smarthost reload`). `reload.preview`: what a reload would
 * change, applying nothing (`smarthost check-config`). Both replies name keys, never values.
 */
export function registerReloadHandlers(
  server: ControlServer,
  reloader: Pick<ConfigReloader, 'reload' | 'preview'>,
): void {
  server.registerHandler('reload', () => reloader.reload('smarthost reload'));
  server.registerHandler('reload.preview', () => reloader.preview());
}
