// `smarthost reload`: have the running relay re-read its config, and say whether it took it.
import { Command } from 'commander';
import { findConfigFile } from '../config/load.js';
import type { ReloadResult } from '../config/watch.js';
import { controlRequest, controlSocketPath, ControlError, RelayNotRunning } from '../control/client.js';
import { CliError, EXIT_REFUSED, note, say, withConfigOption } from './output.js';

export function reloadCommand(): Command {
  return withConfigOption(
    new Command('reload').description(
      'tell the running relay to re-read its config (a broken file is refused; the old config keeps running)',
    ),
    '  smarthost reload -c /etc/smarthost/smarthost.yml',
  ).action(async (opts: { config?: string }) => {
    const socket = controlSocketPath(findConfigFile(opts.config));
    let result: ReloadResult;
    try {
      result = (await controlRequest(socket, 'reload', {}, 15_000)) as ReloadResult;
    } catch (err) {
      if (err instanceof RelayNotRunning)
        throw new CliError(`${err.message}: nothing to reload`, EXIT_REFUSED);
      if (err instanceof ControlError) throw new CliError(err.message, EXIT_REFUSED);
      throw err;
    }
    if (!result.ok) {
      throw new CliError(
        `reload refused, the relay keeps running with its previous config:\n${result.error ?? 'unknown error'}`,
        EXIT_REFUSED,
      );
    }
    say(
      `reloaded ${result.file ?? 'the config'}: ${result.allowlist ?? 0} allowlist entries, ${result.users ?? 0} users`,
    );
    if (result.applied?.length) say(`applied now: ${result.applied.join(', ')}`);
    else if (result.applied) say('no change to apply');
    if (result.upstreamChanged) {
      say(`upstream changed: ${result.upstreamChanged}; waiting mail is retried through it now`);
    }
    if (result.restartNeeded.length) {
      note(`not applied, these take effect only after a restart: ${result.restartNeeded.join(', ')}`);
    }
    // A renewal hook runs this: a refused certificate must fail it, though the config applied.
    if (result.certificate?.ok === false) throw new CliError(result.certificate.message, EXIT_REFUSED);
    if (result.certificate) say(`TLS: ${result.certificate.message}`);
  });
}
