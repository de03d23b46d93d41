// Live reload of the config: on SIGHUP, on `smarthost reload` (the control socket) and when
// the file changes on disk. A reload builds a whole new Config and swaps it in; a file that
// does not load is refused and the running config stays. Sessions in progress go on with what
// they already decided; new connections and transactions see the new policy. A change to the
// upstreams (host, port, credentials, passFile contents, OAuth2 secrets, ca, rateLimit, ...)
// takes effect too: new deliveries go through a new courier, those in progress finish on the
// old one (Relay.applyConfig). What each key's change does is in one table (reload-table.ts);
// the reply and the log line name what was applied and what waits for a restart.
import { readFileSync, watch, type FSWatcher } from 'node:fs';
import path from 'node:path';
import type { Logger } from '../log.js';
import { ConfigError, findConfigFile, loadConfig, parseConfigText, type Config } from './load.js';
import { configChanges, keysWith, type ConfigChange } from './reload-table.js';
import type { CertificateReload } from '../smtp/cert-reload.js';

export interface Reloadable {
  readonly config: Config;
  /** Swaps the config in; says where mail now goes when the upstreams changed. */
  applyConfig(
    config: Config,
    reason?: string,
  ): { upstreamChanged?: string; certificate?: CertificateReload } | void;
}

export interface ReloadResult {
  ok: boolean;
  /** Why the file was refused (names the key or the YAML error). */
  error?: string;
  file?: string;
  /** Keys that changed but only take effect after a restart (not applied). */
  restartNeeded: string[];
  /** Keys that changed and are in force now. */
  applied?: string[];
  /** Of those, the ones that moved delivery to a new courier. */
  newCourier?: string[];
  allowlist?: number;
  users?: number;
  /** Set when the upstreams changed: where mail goes now. */
  upstreamChanged?: string;
  /** The listeners' certificate, re-read on every reload (absent: none configured). */
  certificate?: CertificateReload;
}

/** What a reload of the file would change now (nothing is applied). */
export interface ReloadPreview {
  ok: boolean;
  file?: string;
  error?: string;
  changes: ConfigChange[];
}

function readText(file: string): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

export class ConfigReloader {
  private file: string | undefined;
  /** The text of the config in force (undefined: built-in defaults). */
  private loadedText: string | undefined;
  /** A text already refused, so a broken file is reported once, not on every event. */
  private refusedText: string | undefined;
  private watcher: FSWatcher | undefined;
  private timer: NodeJS.Timeout | undefined;
  /** The text the last watch event found, applied only once a second look finds it unchanged. */
  private settlingText: string | undefined;

  constructor(
    private readonly relay: Reloadable,
    private readonly log: Logger,
    private readonly debounceMs = 300,
  ) {
    this.file = relay.config.file;
    this.loadedText = this.file ? readText(this.file) : undefined;
  }

  /**
   * Re-reads the file and swaps the new config in; a broken file is refused and reported.
   * `watchedText`: the text the watch saw settle, applied as it is (a new read could catch the
   * file being written again). Then nobody asked for a reload, so a change that would stop all
   * delivery (every upstream removed: capture mode) waits for an explicit one.
   */
  reload(reason: string, watchedText?: string): ReloadResult {
    // With no file at start (built-in defaults), a ./smarthost.yml made since is picked up.
    const file = this.file ?? findConfigFile();
    let config: Config;
    let text: string | undefined;
    const refuse = (error: string): ReloadResult => {
      this.refusedText = text;
      this.log.error(`config reload refused (${reason}), the old config keeps running: ${error}`, {
        event: 'reload_failed',
        reason,
      });
      return { ok: false, error, file, restartNeeded: [] };
    };
    try {
      // The watch reads the same file: the one given at start, or ./smarthost.yml.
      text = file ? (watchedText ?? readText(file)) : undefined;
      config = this.load(file, text, watchedText !== undefined);
    } catch (err) {
      return refuse((err as Error).message);
    }
    const changes = configChanges(this.relay.config, config);
    const restartNeeded = keysWith(changes, 'restart');
    const newCourier = keysWith(changes, 'courier');
    const applied = changes.filter((c) => c.effect !== 'restart').map((c) => c.key);
    let upstreamChanged: string | undefined;
    let certificate: CertificateReload | undefined;
    try {
      const outcome = this.relay.applyConfig(config, reason);
      upstreamChanged = outcome?.upstreamChanged;
      certificate = outcome?.certificate;
    } catch (err) {
      // Nothing was swapped in (e.g. an upstream's ca file cannot be read).
      return refuse(`${file ?? config.source}: ${(err as Error).message}`);
    }
    this.file = config.file;
    this.loadedText = text;
    this.refusedText = undefined;
    const summary = applied.length
      ? `applied: ${applied.join(', ')}`
      : restartNeeded.length
        ? 'nothing applied now'
        : 'no change';
    this.log.info(`config reloaded (${reason}), ${summary}`, {
      event: 'reloaded',
      reason,
      file: config.source,
      allowlist: config.allowlist.length,
      users: config.users.length,
      applied,
      restartNeeded,
    });
    if (restartNeeded.length) {
      this.log.warn(
        `config changes not applied, they need a restart to take effect: ${restartNeeded.join(', ')}`,
        { event: 'reload_restart_needed', keys: restartNeeded },
      );
    }
    return {
      ok: true,
      file: config.source,
      restartNeeded,
      applied,
      newCourier,
      allowlist: config.allowlist.length,
      users: config.users.length,
      upstreamChanged,
      certificate,
    };
  }

  /** The config `file` holds (`text`), or built-in defaults without a file; throws ConfigError. */
  private load(file: string | undefined, text: string | undefined, fromWatch: boolean): Config {
    if (!file) return loadConfig();
    if (text === undefined) throw new ConfigError(file, ['cannot read the file (was it removed?)']);
    // An empty file is almost always one being written (truncated, not yet filled): taken as
    // built-in defaults it would switch a relay to capture mode for a moment.
    if (text.trim() === '')
      throw new ConfigError(file, [
        'the file is empty (being written?); to run on the built-in defaults, write {} in it',
      ]);
    const config = parseConfigText(text, file);
    if (fromWatch && this.relay.config.upstreams.length > 0 && config.upstreams.length === 0)
      throw new ConfigError(file, [
        'this change removes every upstream, so mail would go to the outbox instead of the ESP; ' +
          'a file change alone does not do that: run `smarthost reload` (or send SIGHUP) to apply it',
      ]);
    return config;
  }

  /** What a reload would do now, without doing it (`smarthost check-config` asks). */
  preview(): ReloadPreview {
    const file = this.file ?? findConfigFile();
    try {
      const changes = configChanges(
        this.relay.config,
        this.load(file, file ? readText(file) : undefined, false),
      );
      return { ok: true, file, changes };
    } catch (err) {
      return { ok: false, file, error: (err as Error).message, changes: [] };
    }
  }

  /**
   * Reloads when the file changes. The folder is watched, not the file: editors and the CLI
   * replace the file by a rename, which a watch on the old file would never see. Events are
   * debounced, and a reload happens only when the text differs from the one in force.
   */
  watch(): void {
    const target = this.file ?? path.resolve('smarthost.yml');
    const dir = path.dirname(target);
    const base = path.basename(target);
    try {
      this.watcher = watch(dir, { persistent: false }, (_event, name) => {
        if (!name || name.toString() === base) this.changedSoon(target);
      });
      this.watcher.on('error', (err) =>
        this.log.warn(`stopped watching ${dir} for config changes: ${err.message}`, { event: 'watch_error' }),
      );
      // A change made while the relay was starting (before the watch) is not missed.
      this.changedSoon(target);
    } catch (err) {
      this.log.warn(
        `cannot watch ${dir} for config changes (use SIGHUP or smarthost reload): ${(err as Error).message}`,
        {
          event: 'watch_error',
        },
      );
    }
  }

  private changedSoon(target: string): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = setTimeout(() => this.changed(target), this.debounceMs);
    this.timer.unref();
  }

  private changed(target: string): void {
    this.timer = undefined;
    const text = readText(target);
    // Missing: mid-replacement by an editor (the rename's event follows), or removed: keep running.
    if (text === undefined || text === this.loadedText || text === this.refusedText) {
      this.settlingText = undefined;
      return;
    }
    // A file written in place (truncate, then write) can be read half-written: apply a text only
    // when it is the same a debounce period later.
    if (text !== this.settlingText) {
      this.settlingText = text;
      this.changedSoon(target);
      return;
    }
    this.settlingText = undefined;
    this.reload('file changed', text);
  }

  close(): void {
    if (this.timer) clearTimeout(this.timer);
    this.watcher?.close();
    this.watcher = undefined;
  }
}
