// Steps shared by the commands that read or edit the config and talk to the running relay.
import path from 'node:path';
import { accessSync, constants } from 'node:fs';
import { ConfigEditError, editConfigFile, type DocumentEdit, type EditResult } from '../config/edit.js';
import { ConfigError, findConfigFile, loadConfig, type Config } from '../config/load.js';
import type { ReloadResult } from '../config/watch.js';
import { controlRequest, controlSocketPath, ControlError, RelayNotRunning } from '../control/client.js';
import { CliError, configFileForEdit, EXIT_REFUSED, note, say } from './output.js';
import { CONFIG_READ_ADVICE, configWriteAdvice, describeFsError, isFsError } from './fs-errors.js';

/** The config `start` would load; a config that does not load stops the command (exit 1). */
export function loadConfigOrExit(explicit?: string): Config {
  // A file that is there but cannot be read is not an invalid config: say who cannot read it.
  const file = findConfigFile(explicit);
  try {
    if (file) accessSync(file, constants.R_OK);
  } catch (err) {
    if (isFsError(err) && err.code !== 'ENOENT') {
      throw new CliError(
        describeFsError(err, 'read the config file', file, CONFIG_READ_ADVICE),
        EXIT_REFUSED,
      );
    }
  }
  try {
    return loadConfig(explicit);
  } catch (err) {
    if (err instanceof ConfigError) throw new CliError(err.message, EXIT_REFUSED);
    throw err;
  }
}

/**
 * Fails early, before a command asks for a password, when the config file (or, for a new one,
 * its folder) cannot be written: the edit would be refused anyway, after the typing.
 */
export function assertConfigWritable(explicit: string | undefined): void {
  const file = configFileForEdit(explicit);
  for (const target of [path.dirname(file), file]) {
    try {
      accessSync(target, constants.W_OK);
    } catch (err) {
      if (isFsError(err) && err.code === 'ENOENT') continue;
      if (isFsError(err)) {
        throw new CliError(
          describeFsError(
            err,
            `write the config (${path.basename(file)}) in`,
            target,
            configWriteAdvice(err),
          ),
          EXIT_REFUSED,
        );
      }
      throw err;
    }
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
    if (isFsError(err)) {
      // The temp file beside it, or the .bak copy: the folder is what cannot be written.
      const where =
        path.dirname(err.path) === path.dirname(file) && err.path !== file ? path.dirname(file) : err.path;
      throw new CliError(
        describeFsError(err, `write the config (${path.basename(file)}) in`, where, configWriteAdvice(err)),
        EXIT_REFUSED,
      );
    }
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
