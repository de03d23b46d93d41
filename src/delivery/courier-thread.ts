// Delivery to the ESPs on a thread of its own.
//
// Under load the relay's one thread is what limits it, and about a quarter of that thread went
// to delivery: nodemailer's SMTP client writing each message to the ESP and parsing its
// replies. ThreadedCourier runs the SmtpCourier (failover, health, pacing, routing, OAuth2
// tokens: smtp-courier.ts) in a worker thread (courier-worker.ts), so the SMTP sessions, the
// spool and the queue keep the relay's thread and delivery runs on another core.
//
// The queue stays the only owner of each message (its files, retries and bounces): the worker
// carries out one attempt at a time as it is asked and answers per recipient, exactly as the
// SmtpCourier answers in-process. A small body kept in memory since it was accepted is moved to
// the worker; any other is read from its spool file by the worker.
//
// If the worker dies (a bug, out of memory), every attempt in flight ends as a temporary
// failure, so those messages stay queued and are retried, and the next attempt starts a new
// worker. A message the ESP took just before such a death may be sent twice, as after a crash
// of the whole relay; none is lost.
import { EventEmitter } from 'node:events';
import { readFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import type { Upstream } from '../config/load.js';
import type { LogFields, Logger } from '../log.js';
import type { QueueEntry } from '../spool/entry.js';
import { allTemporary, type Courier, type MessageBody, type RecipientResult } from './courier.js';
import { describeUpstreams, sizeLimitOf } from './smtp-courier.js';
import type { UpstreamEvent, UpstreamWithCa } from './upstream-client.js';
import { carrySecrets, restoreSecrets } from '../config/secret.js';
import type { PaceRequest, PaceReservation, SharedPace } from '../cluster/pace.js';

/** What the worker is started with. */
export interface CourierWorkerData {
  /** With their secrets in the form a structured clone keeps (see below). */
  upstreams: UpstreamWithCa[];
  hostname: string;
  /** Cluster mode: the worker asks this thread for each upstream's shared pace ('pace' messages). */
  sharedPace?: boolean;
}

/**
 * The upstreams as they cross to the worker, and back as the courier needs them. A Secret keeps
 * its value in a private field, which a structured clone drops: it crosses as a plain marked
 * value (config/secret.ts) and is a Secret again on the other side.
 */
export function upstreamsToWorker(upstreams: Upstream[]): Upstream[] {
  return carrySecrets(upstreams);
}

export function upstreamsFromRelay<T extends Upstream>(upstreams: T[]): T[] {
  return restoreSecrets(upstreams);
}

export type LogLevel = 'error' | 'warn' | 'info' | 'debug';

/** Relay → worker: one message, or the sends of one turn of the event loop together. */
export type ToWorker =
  | { type: 'sends'; sends: SendRequest[] }
  | { type: 'start' }
  | { type: 'stopping' }
  | { type: 'close' }
  | { type: 'pace'; call: number; reservation: PaceReservation | undefined };

export type SendRequest = {
  call: number;
  entry: QueueEntry;
  recipients: string[];
  /** `data`: the body itself when kept in memory (moved, not copied), else read from `path`. */
  body: { path: string; length?: number; data?: Uint8Array };
};

/** Worker → relay. Results are sent together too, those of one turn of the worker's loop. */
export type FromWorker =
  | { type: 'results'; results: { call: number; results: RecipientResult[] }[] }
  | { type: 'log'; level: LogLevel; message: string; fields: LogFields }
  | { type: 'upstream'; event: UpstreamEvent }
  | { type: 'pace'; call: number; upstream: string; request: PaceRequest };

/** How long a closing worker may take to say QUIT to its ESPs before it is ended. */
const CLOSE_GRACE_MS = 2_000;

interface PendingSend {
  recipients: string[];
  resolve: (results: RecipientResult[]) => void;
}

/**
 * An SmtpCourier in a worker thread (see the top of this file). Emits 'upstream' events
 * ({@link UpstreamEvent}) as the SmtpCourier does.
 */
export class ThreadedCourier extends EventEmitter implements Courier {
  readonly description: string;
  /** What the relay's thread knows of each upstream: its settings and the SIZE it declared. */
  readonly upstreams: { upstream: Upstream; maxSize: number | undefined }[];
  private readonly caTexts: (string | undefined)[];
  private worker: Worker | undefined;
  private readonly pending = new Map<number, PendingSend>();
  private nextCall = 1;
  /** Sends waiting for the end of this turn of the event loop (see flush), and their bodies. */
  private readonly outgoing: SendRequest[] = [];
  private readonly transfers: ArrayBuffer[] = [];
  private started = false;
  private stopped = false;
  private closing: Promise<void> | undefined;

  constructor(
    upstreams: Upstream[],
    private readonly hostname: string,
    private readonly options: {
      log?: Logger;
      /** Cluster mode: each upstream's pace shared with the other relays (src/cluster/pace.ts). */
      sharedPace?: (upstream: string) => SharedPace | undefined;
    } = {},
  ) {
    super();
    // The CA files' text, read once when the config loaded (an unreadable one refuses the config
    // at start or at the reload), so a worker started after a death uses the same text,
    // whatever has happened to the file since. Read here only for settings made by hand.
    this.caTexts = upstreams.map((u) => u.caText ?? (u.ca ? readFileSync(u.ca, 'utf8') : undefined));
    this.upstreams = upstreams.map((upstream) => ({ upstream, maxSize: undefined }));
    this.description = describeUpstreams(upstreams);
    this.worker = this.spawn();
  }

  private spawn(): Worker {
    const workerData: CourierWorkerData = {
      upstreams: upstreamsToWorker(this.upstreams.map((u) => u.upstream)).map((u, i) => ({
        ...u,
        caText: this.caTexts[i],
      })),
      hostname: this.hostname,
      sharedPace: this.options.sharedPace !== undefined,
    };
    const worker = new Worker(new URL('./courier-worker.js', import.meta.url), { workerData });
    worker.on('message', (message: FromWorker) => this.received(message));
    worker.on('error', (err: Error) => {
      this.options.log?.error(`the delivery thread failed: ${err.message}`, {
        event: 'delivery_thread_failed',
        stack: err.stack,
      });
    });
    // A message that cannot be read would leave its sends unanswered: end the worker instead,
    // and exited() answers them.
    worker.on('messageerror', () => void worker.terminate());
    worker.on('exit', (code: number) => this.exited(worker, code));
    // A worker started after a death is told what the one before it was told.
    if (this.started) worker.postMessage({ type: 'start' } satisfies ToWorker);
    if (this.stopped) worker.postMessage({ type: 'stopping' } satisfies ToWorker);
    return worker;
  }

  /** The worker is gone: what it had in hand is retried later, the next attempt starts another. */
  private exited(worker: Worker, code: number): void {
    if (worker !== this.worker) return;
    this.worker = undefined;
    if (!this.closing) {
      this.options.log?.error(
        `the delivery thread stopped (exit code ${code}): ${this.pending.size} attempt(s) in hand will be retried, the next one starts a new thread`,
        { event: 'delivery_thread_failed', code, inHand: this.pending.size },
      );
    }
    const reply = this.closing ? 'the relay is shutting down' : 'the delivery thread stopped unexpectedly';
    for (const { recipients, resolve } of this.pending.values()) resolve(allTemporary(recipients, reply));
    this.pending.clear();
    // Not handed over yet, but answered just now: not for the next worker.
    this.outgoing.length = 0;
    this.transfers.length = 0;
  }

  private received(message: FromWorker): void {
    switch (message.type) {
      case 'results':
        for (const { call, results } of message.results) {
          const pending = this.pending.get(call);
          this.pending.delete(call);
          pending?.resolve(results);
        }
        break;
      case 'log':
        this.options.log?.log(message.level, message.message, message.fields);
        break;
      case 'upstream': {
        const { event } = message;
        if (event.state === 'size') {
          for (const u of this.upstreams) if (u.upstream.name === event.upstream) u.maxSize = event.size;
        }
        this.emit('upstream', event);
        break;
      }
      case 'pace': {
        // The worker's Pacer asks for a shared reservation; no answer means "local pace alone".
        const { call, upstream, request } = message;
        const worker = this.worker;
        const shared = this.options.sharedPace?.(upstream);
        void (shared ? shared.reserve(request) : Promise.resolve(undefined)).then((reservation) =>
          worker?.postMessage({ type: 'pace', call, reservation } satisfies ToWorker),
        );
        break;
      }
    }
  }

  start(): void {
    this.started = true;
    this.worker?.postMessage({ type: 'start' } satisfies ToWorker);
  }

  sizeLimit(sender?: string): number | undefined {
    return sizeLimitOf(this.upstreams, sender);
  }

  send(entry: QueueEntry, recipients: string[], body: MessageBody): Promise<RecipientResult[]> {
    if (this.closing) return Promise.resolve(allTemporary(recipients, 'the relay is shutting down'));
    this.worker ??= this.spawn();
    const call = this.nextCall++;
    // A copy of its own (a Buffer may be a view of a larger shared one), moved to the worker.
    const data = body.data ? new Uint8Array(body.data) : undefined;
    return new Promise((resolve) => {
      this.pending.set(call, { recipients, resolve });
      this.outgoing.push({ call, entry, recipients, body: { path: body.path, length: body.length, data } });
      if (data) this.transfers.push(data.buffer);
      if (this.outgoing.length === 1) setImmediate(() => this.flush());
    });
  }

  /**
   * Hands the sends gathered in this turn of the event loop to the worker in one message. Each
   * message wakes the worker, and a wake-up costs more than the copy: under load several sends
   * come due in the same turn.
   */
  private flush(): void {
    if (this.outgoing.length === 0) return;
    const sends = this.outgoing.splice(0);
    const transfers = this.transfers.splice(0);
    this.worker?.postMessage({ type: 'sends', sends } satisfies ToWorker, transfers);
  }

  stopping(): void {
    this.stopped = true;
    this.worker?.postMessage({ type: 'stopping' } satisfies ToWorker);
  }

  /** Closes the ESP connections (QUIT) and ends the worker; attempts still in flight are retried. */
  close(): Promise<void> {
    this.closing ??= this.endWorker();
    return this.closing;
  }

  private async endWorker(): Promise<void> {
    const worker = this.worker;
    if (!worker) return;
    const exited = new Promise<void>((resolve) => worker.once('exit', () => resolve()));
    worker.postMessage({ type: 'close' } satisfies ToWorker);
    const timer = setTimeout(() => void worker.terminate(), CLOSE_GRACE_MS);
    await exited;
    clearTimeout(timer);
  }
}
