// The certificate the listeners present, kept current: read at start, again on every config
// reload (SIGHUP, `smarthost reload`) and when the files change on disk, so a renewal by
// certbot, cert-manager or a copy by hand is served without a restart. New TLS handshakes
// (STARTTLS and implicit TLS) get the new pair; sessions already in TLS keep theirs. A pair that
// cannot be served (unreadable, garbage, a key of another certificate, expired) is refused with
// one `tls_reload_failed` line and the pair in use stays.
//
// The folders are watched, not the files: certbot swaps symlinks in live/, Kubernetes swaps a
// `..data` symlink beside the files, editors and `cp` replace or rewrite them; a watch on the
// old file would see none of that. Both the folder of the configured path and that of the file
// it resolves to are watched. Events are debounced, and a pair is taken only once two looks a
// debounce apart find the same text (cert and key are not written at the same instant).
import { readFileSync, realpathSync, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import type { Config } from '../config/load.js';
import type { Logger } from '../log.js';
import {
  CertificateProblem,
  describeExpiry,
  EXPIRY_WARNING_MS,
  inspectPair,
  readPairFiles,
  type PairFiles,
  type PairInfo,
} from './cert-check.js';
import { listenerCertificate, type KeyPair } from './tls.js';

export interface CertificateDeps {
  log: Logger;
  /** Puts a pair in force on every listener (Listener.updateKeyPair). */
  apply: (pair: KeyPair) => void;
  /** The pair in force now and its expiry, for the metric (`file`: the cert's path). */
  loaded?: (file: string, notAfterMs: number) => void;
  debounceMs?: number;
}

export interface CertificateReload {
  ok: boolean;
  /** Whether a new pair is in force now. */
  changed: boolean;
  /** What was loaded, or why it was refused. */
  message: string;
}

interface Current {
  pair: KeyPair;
  info: PairInfo;
  /** Undefined for the self-signed pair the relay made. */
  files: PairFiles | undefined;
}

export class ListenerCertificates {
  private current: Current | undefined;
  /** A pair already refused, so a broken renewal is logged once, not on every event. */
  private refusedText: string | undefined;
  private settlingText: string | undefined;
  private watchers: FSWatcher[] = [];
  private watchedDirs = '';
  private timer: NodeJS.Timeout | undefined;
  private files: () => PairFiles | undefined = () => undefined;

  constructor(private readonly deps: CertificateDeps) {}

  /**
   * The pair for the listeners at start (undefined: no listener needs one). An admin pair that
   * cannot be served stops the start with the reason (CertificateProblem).
   */
  async load(config: Config): Promise<KeyPair | undefined> {
    const files = config.tls ? { cert: config.tls.cert, key: config.tls.key } : undefined;
    const pair = files ? readPairFiles(files) : await listenerCertificate(config, this.deps.log);
    if (!pair) return undefined;
    const dir = path.join(config.spool.dir, 'tls');
    const named = files ?? { cert: path.join(dir, 'selfsigned.crt'), key: path.join(dir, 'selfsigned.key') };
    const info = inspectPair(pair, named);
    this.current = { pair, info, files };
    this.loadedLog('tls_loaded', 'certificate loaded', files);
    return pair;
  }

  /** Re-reads the configured pair on a config reload (the new config's paths); undefined: none. */
  reload(config: Config, reason: string): CertificateReload | undefined {
    if (!this.current) return undefined;
    // A `tls:` block added or removed waits for a restart (reload-table.ts); new paths do not.
    if (!config.tls || !this.current.files) return undefined;
    return this.reloadFiles({ cert: config.tls.cert, key: config.tls.key }, reason);
  }

  private reloadFiles(files: PairFiles, reason: string, pair?: KeyPair): CertificateReload {
    const current = this.current!;
    let info: PairInfo;
    try {
      pair ??= readPairFiles(files);
      if (
        pair.cert === current.pair.cert &&
        pair.key === current.pair.key &&
        samePaths(files, current.files)
      ) {
        return {
          ok: true,
          changed: false,
          message: `certificate unchanged (${describeExpiry(current.info)})`,
        };
      }
      info = inspectPair(pair, files, { refuseExpired: true });
    } catch (err) {
      if (!(err instanceof CertificateProblem)) throw err;
      this.refusedText = pair ? pairText(pair) : undefined;
      this.deps.log.error(
        `new TLS certificate refused (${reason}), the one in use stays (${describeExpiry(current.info)}): ${err.message}`,
        { event: 'tls_reload_failed', reason, path: err.file, problem: err.reason },
      );
      return {
        ok: false,
        changed: false,
        message: `certificate refused, the one in use stays: ${err.message}`,
      };
    }
    this.deps.apply(pair);
    this.current = { pair, info, files };
    this.refusedText = undefined;
    this.loadedLog(
      'tls_reloaded',
      `TLS certificate reloaded (${reason}): new connections get it`,
      files,
      reason,
    );
    // The symlinks may point elsewhere now (certbot's archive/NNN): watch where they lead.
    if (this.watchers.length) this.watch(this.files);
    return {
      ok: true,
      changed: true,
      message: `new certificate in force: ${info.subject}, ${describeExpiry(info)}`,
    };
  }

  private loadedLog(
    event: 'tls_loaded' | 'tls_reloaded',
    message: string,
    files: PairFiles | undefined,
    reason?: string,
  ): void {
    const { info } = this.current!;
    const file = files?.cert ?? 'self-signed';
    const now = Date.now();
    const fields = {
      event,
      reason,
      path: files?.cert,
      subject: info.subject,
      notAfter: new Date(info.notAfter).toISOString(),
      fingerprint: info.fingerprint,
    };
    this.deps.log.info(`${message}: ${info.subject}, ${describeExpiry(info, now)}`, fields);
    if (info.notAfter <= now) {
      this.deps.log.error(`the TLS certificate ${file} has expired: clients that check it will refuse TLS`, {
        event: 'tls_certificate_expired',
        path: files?.cert,
        notAfter: fields.notAfter,
      });
    } else if (files && info.notAfter - now < EXPIRY_WARNING_MS) {
      this.deps.log.warn(`the TLS certificate ${file} ${describeExpiry(info, now)}: is renewal running?`, {
        event: 'tls_certificate_expiring',
        path: files.cert,
        notAfter: fields.notAfter,
      });
    }
    this.deps.loaded?.(files?.cert ?? 'selfsigned', info.notAfter);
  }

  /**
   * Watches the configured files' folders (and those of the files they resolve to) and
   * reloads the pair when it changes. `files`: the paths in force (they may change on reload).
   */
  watch(files: () => PairFiles | undefined): void {
    this.files = files;
    const now = files();
    if (!now || !this.current?.files) return;
    const dirs = new Set<string>();
    for (const file of [now.cert, now.key]) {
      dirs.add(path.dirname(path.resolve(file)));
      try {
        dirs.add(path.dirname(realpathSync(file)));
      } catch {
        // Gone for a moment (mid-swap): the folder of the configured path is watched anyway.
      }
    }
    const key = [...dirs].sort().join('\n');
    if (key === this.watchedDirs) return;
    this.stopWatching();
    this.watchedDirs = key;
    for (const dir of dirs) {
      try {
        const watcher = watch(dir, { persistent: false }, () => this.changedSoon());
        watcher.on('error', (err) =>
          this.deps.log.warn(`stopped watching ${dir} for certificate changes: ${err.message}`, {
            event: 'watch_error',
          }),
        );
        this.watchers.push(watcher);
      } catch (err) {
        this.deps.log.warn(
          `cannot watch ${dir} for certificate changes (use SIGHUP or smarthost reload after a renewal): ${(err as Error).message}`,
          { event: 'watch_error' },
        );
      }
    }
  }

  private changedSoon(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.changed(), this.deps.debounceMs ?? 300);
    this.timer.unref();
  }

  private changed(): void {
    this.timer = undefined;
    const files = this.files();
    const current = this.current;
    if (!files || !current?.files) return;
    let pair: KeyPair;
    try {
      pair = { cert: readFileSync(files.cert, 'utf8'), key: readFileSync(files.key, 'utf8') };
    } catch {
      // Mid-swap (a symlink replaced, a file renamed over): the next event comes, or a reload.
      this.settlingText = undefined;
      return;
    }
    const text = pairText(pair);
    if (text === pairText(current.pair) || text === this.refusedText) {
      this.settlingText = undefined;
      return;
    }
    if (text !== this.settlingText) {
      this.settlingText = text;
      this.changedSoon();
      return;
    }
    this.settlingText = undefined;
    this.reloadFiles(files, 'file changed', pair);
  }

  private stopWatching(): void {
    for (const watcher of this.watchers) watcher.close();
    this.watchers = [];
    this.watchedDirs = '';
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = undefined;
    this.stopWatching();
  }
}

function pairText(pair: KeyPair): string {
  return `${pair.cert}\u0000${pair.key}`;
}

function samePaths(a: PairFiles, b: PairFiles | undefined): boolean {
  return b !== undefined && a.cert === b.cert && a.key === b.key;
}
