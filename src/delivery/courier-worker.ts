// The delivery thread (courier-thread.ts): an SmtpCourier that carries out the attempts the
// relay's thread asks for and answers with each one's results. Its log lines and upstream
// events go to the relay's thread, which writes them with its own logger (level, format,
// redaction and masking all apply there).
import { parentPort, workerData } from 'node:worker_threads';
import type { LogFields, Logger } from '../log.js';
import { allTemporary, type RecipientResult } from './courier.js';
import {
  upstreamsFromRelay,
  type CourierWorkerData,
  type FromWorker,
  type LogLevel,
  type SendRequest,
  type ToWorker,
} from './courier-thread.js';
import { SmtpCourier } from './smtp-courier.js';
import type { PaceReservation, SharedPace } from '../cluster/pace.js';

if (!parentPort) throw new Error('courier-worker.js runs only as a worker thread');
const port = parentPort;
const post = (message: FromWorker) => port.postMessage(message);

/** The few Logger methods the courier calls, each handing the line to the relay's thread. */
function forwardingLogger(): Logger {
  const at = (level: LogLevel) => (message: string, fields: LogFields) =>
    post({ type: 'log', level, message, fields });
  return { error: at('error'), warn: at('warn'), info: at('info'), debug: at('debug') } as unknown as Logger;
}

const { upstreams, hostname, sharedPace } = workerData as CourierWorkerData;

/** Cluster mode: reservations asked of the relay's thread (which holds the Redis client). */
const paceCalls = new Map<number, (reservation: PaceReservation | undefined) => void>();
let nextPaceCall = 1;
function threadPace(upstream: string): SharedPace {
  return {
    reserve: (request) =>
      new Promise((resolve) => {
        const call = nextPaceCall++;
        paceCalls.set(call, resolve);
        post({ type: 'pace', call, upstream, request });
      }),
  };
}

const courier = new SmtpCourier(upstreamsFromRelay(upstreams), hostname, {
  log: forwardingLogger(),
  sharedPace: sharedPace ? threadPace : undefined,
});
courier.on('upstream', (event) => post({ type: 'upstream', event }));

/** Results finished in this turn of the loop, sent together (see flush in courier-thread.ts). */
let finished: { call: number; results: RecipientResult[] }[] = [];

function answer(call: number, results: RecipientResult[]): void {
  finished.push({ call, results });
  if (finished.length > 1) return;
  setImmediate(() => {
    const results = finished;
    finished = [];
    post({ type: 'results', results });
  });
}

function send({ call, entry, recipients, body }: SendRequest): void {
  const data = body.data && Buffer.from(body.data.buffer, body.data.byteOffset, body.data.byteLength);
  courier.send(entry, recipients, { path: body.path, length: body.length, data }).then(
    (results) => answer(call, results),
    // The courier answers every failure itself: this is a bug, and retried like a failure.
    (err: Error) => answer(call, allTemporary(recipients, `local error: ${err.message}`)),
  );
}

// A message from the relay that cannot be read: its sends would never be answered. Ending the
// thread makes the relay answer them (temporary) and start another.
port.on('messageerror', () => process.exit(1));

port.on('message', (message: ToWorker) => {
  switch (message.type) {
    case 'sends':
      for (const request of message.sends) send(request);
      break;
    case 'start':
      courier.start();
      break;
    case 'pace':
      paceCalls.get(message.call)?.(message.reservation);
      paceCalls.delete(message.call);
      break;
    case 'stopping':
      courier.stopping();
      break;
    case 'close':
      // QUIT goes out to every ESP; once the sockets are closed nothing is left and the
      // thread ends (the relay's thread ends it anyway after a grace period).
      void courier.close().then(() => port.close());
      break;
  }
});
