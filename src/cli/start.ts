// `smarthost start`: load the config, run the relay, and handle the signals a service
// manager sends (SIGTERM/SIGINT: drain and exit 0; SIGHUP: reload the config, upstreams and
// their credentials included).
import { ConfigReloader } from '../config/watch.js';
import { registerReloadHandlers } from '../control/handlers.js';
import { BatchedOutput, createLogger } from '../log.js';
import { Relay } from '../relay.js';
import { loadConfigOrExit } from './common.js';
import { describeFsError, isFsError, verbOf, spoolAdvice } from './fs-errors.js';

export async function startCommand(options: { config?: string }): Promise<void> {
  const config = loadConfigOrExit(options.config);
  const log = createLogger(config.log, new BatchedOutput());
  let relay: Relay;
  try {
    relay = new Relay({ config, log });
  } catch (err) {
    // E.g. an upstream's `ca` file that cannot be read.
    log.error(`could not start: ${(err as Error).message}`, { event: 'start_failed' });
    await new Promise((r) => setTimeout(r, 50));
    process.exit(1);
  }
  // Live reload: SIGHUP, `smarthost reload` (control socket) and changes to the file.
  const reloader = new ConfigReloader(relay, log);
  registerReloadHandlers(relay.control, reloader);
  try {
    await relay.start();
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    if (isFsError(e)) {
      // The spool (or a file in it) cannot be made or written: not a port problem.
      const inSpool = e.path.startsWith(config.spool.dir);
      log.error(
        `could not start: ${describeFsError(e, verbOf(e), e.path, inSpool ? spoolAdvice(config.spool.dir) : '')}`,
        { event: 'start_failed', path: e.path, code: e.code },
      );
      await new Promise((r) => setTimeout(r, 50));
      process.exit(1);
    }
    const hint =
      e.code === 'EADDRINUSE'
        ? ' (is another smarthost or mail server running on that port?)'
        : e.code === 'EACCES'
          ? ' (ports below 1024 need root or CAP_NET_BIND_SERVICE)'
          : '';
    log.error(`could not start: ${e.message}${hint}`, { event: 'start_failed' });
    await new Promise((r) => setTimeout(r, 50));
    process.exit(1);
  }

  reloader.watch();

  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) return;
    stopping = true;
    reloader.close();
    log.info(`received ${signal}`, { event: 'signal', signal });
    relay.stop().then(
      () => setTimeout(() => process.exit(0), 20),
      (err: Error) => {
        log.error('error while stopping', { event: 'stop_failed', error: err.message });
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  process.on('SIGHUP', () => reloader.reload('SIGHUP'));
}
