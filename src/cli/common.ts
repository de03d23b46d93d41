// Steps shared by the commands that read or edit the config and talk to the running relay.
import { ConfigEditError, editConfigFile, type DocumentEdit, type EditResult } from '../config/edit.js';
import { ConfigError, loadConfig, type Config } from '../config/load.js';
import type { ReloadResult } from '../config/watch.js';
import { controlRequest, controlSocketPath, ControlError, RelayNotRunning } from '../control/client.js';
import { CliError, configFileForEdit, EXIT_REFUSED, note, say } from './output.js';

/** The config `start` would load; a config that does not load stops the command (exit 1). */
export function loadConfigOrExit(explicit?: string): Config {
  try {
    return loadConfig(explicit);
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(err.message, EXIT_REFUSED);
    throw err;
  }
}

/** Applies an edit to the config file (created when there is none), then tells a running relay. */
export async function editAndApply(explicit: string | undefined, edit: DocumentEdit): Promise<EditResult> {
  const file = configFileForEdit(explicit);
  let result: EditResult;
  try {
    result = await editConfigFile(file, edit);
  } catch (err) {
    if (err instanceof ConfigEditError) throw new CliError(err.message, EXIT_REFUSED);
    throw err;
  }
  for (const text of result.notes) note(text);
  if (result.created) say(`created ${result.file} (there was no config file yet)`);
  else say(`wrote ${result.file} (previous version kept as ${result.backup ?? `${result.file}.bak`})`);
  await tellRelay(result.file);
  return result;
}

/** Asks the running relay to reload; says what happened. A relay that is not running is fine. */
async function tellRelay(file: string): Promise<void> {
  const socket = controlSocketPath(file);
  try {
    const result = (await controlRequest(socket, 'reload', {}, 15_000)) as ReloadResult;
    if (result.ok) {
      say('the running relay reloaded its config: new connections see the change now');
      if (result.restartNeeded.length) {
        note(`these changes take effect after a restart: ${result.restartNeeded.join(', ')}`);
      }
    } else {
      throw new CliError(
        `the running relay refused the new config and keeps the old one:\n${result.error ?? 'unknown error'}`,
      );
    }
  } catch (err) {
    if (err instanceof RelayNotRunning) {
      say('the relay is not running: it will use this config when it starts');
    } else if (err instanceof ControlError) {
      note(`could not ask the relay to reload (${err.message}); it also reloads when the file changes`);
    } else {
      throw err;
    }
  }
}

/** All of stdin as text, without the one trailing newline `echo` adds. */
export async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of process.stdin) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
}
