// The relay's own control commands: the queue ones, and `reload` / `reload.preview` (made by
// `smarthost start`, which owns the reloader). Others register theirs with registerHandler:
// `stats` and `metrics` (the traffic statistics).
import type { ConfigReloader } from '../config/watch.js';
import type { DeliveryQueue } from '../queue/delivery-queue.js';
import type { Spool } from '../spool/spool.js';
import { ControlRefusal } from './protocol.js';
import { QueueAdmin, type Action, type Selection } from './queue-admin.js';
import type { QueueFilter } from './queue-filter.js';
import type { ControlServer } from './server.js';

function idList(args: Record<string, unknown>): string[] {
  const ids = args.ids;
  if (!Array.isArray(ids) || ids.length === 0 || !ids.every((id) => typeof id === 'string')) {
    throw new ControlRefusal('expected "ids": a list of queue ids');
  }
  return ids as string[];
}

/** `ids`, `all: true` and `filter` as the CLI sends them; the admin checks what they hold. */
function selection(args: Record<string, unknown>): Selection {
  const out: Selection = {};
  if (args.ids !== undefined) out.ids = idList(args);
  if (args.all === true) out.all = true;
  if (args.filter !== undefined) out.filter = args.filter as QueueFilter;
  return out;
}

const ACTIONS: readonly Action[] = ['list', 'retry', 'delete', 'hold', 'release', 'requeue'];

export function registerRelayHandlers(
  server: ControlServer,
  relay: { spool: Spool; queue: DeliveryQueue },
): void {
  const admin = new QueueAdmin(relay.spool, relay.queue);
  server.registerHandler('queue.list', (args) => admin.list(args.filter as QueueFilter | undefined));
  server.registerHandler('queue.show', (args) => admin.show(String(args.id)));
  server.registerHandler('queue.match', (args) => {
    const action = args.action as Action;
    if (!ACTIONS.includes(action))
      throw new ControlRefusal(`expected "action": one of ${ACTIONS.join(', ')}`);
    return admin.match(action, selection(args));
  });
  server.registerHandler('queue.retry', (args) => admin.retry(selection(args)));
  server.registerHandler('queue.delete', (args) => admin.delete(selection(args)));
  server.registerHandler('queue.hold', (args) => admin.hold(selection(args)));
  server.registerHandler('queue.release', (args) => admin.release(selection(args)));
  server.registerHandler('queue.failed', () => admin.failed());
  server.registerHandler('queue.requeue', (args) => admin.requeue(selection(args)));
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
