// The `smarthost` command line. Each subcommand lives in its own module.
import { readFileSync } from 'node:fs';
import { Command, CommanderError } from 'commander';
import { allowlistCommand } from './allowlist.js';
import { checkConfigCommand } from './check-config.js';
import { CliError, CONFIG_SEARCH, EXIT_OK, EXIT_REFUSED, EXIT_USAGE } from './output.js';
import { queueCommand } from './queue.js';
import { reloadCommand } from './reload.js';
import { sendTestCommand } from './send-test.js';
import { upstreamCommand } from './upstream.js';
import { userCommand } from './user.js';
import { startCommand } from './start.js';
import { statsCommand } from './stats.js';
import { clusterCommand } from './cluster.js';
import { quietOnClosedPipes } from './pipes.js';
import { describeFsError, isFsError, verbOf } from './fs-errors.js';

// dist/src/cli/index.js → the package's package.json.
const { version } = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
  version: string;
};

const program = new Command();
program
  .name('smarthost')
  .version(version, '-V, --version')
  .description('An SMTP smarthost for company networks: devices send here, it forwards to your ESP.')
  .showHelpAfterError();

program
  .command('start')
  .description('run the relay (what `npm start` runs)')
  .option('-c, --config <file>', `config file (default: ${CONFIG_SEARCH}, else built-in defaults)`)
  .addHelpText('after', '\nExample:\n  smarthost start -c /etc/smarthost/smarthost.yml')
  .action(startCommand);

program.addCommand(statsCommand());

program.addCommand(checkConfigCommand());
program.addCommand(allowlistCommand());
program.addCommand(userCommand());
program.addCommand(queueCommand());
program.addCommand(upstreamCommand());
program.addCommand(sendTestCommand());
program.addCommand(reloadCommand());
program.addCommand(clusterCommand());
// Listed for --help only: bin/smarthost.js runs `smarthost sendmail …` before commander sees it.
program
  .command('sendmail')
  .description(
    'the sendmail command for scripts, cron and PHP mailers (-t, -i, -f…, -bs): see README, "Linux servers and scripts"',
  )
  .addHelpText(
    'after',
    '\nExample:\n  printf "To: ops@corp.example\\nSubject: hi\\n\\nhello\\n" | smarthost sendmail -t -i',
  );

// Exit codes: 0 ok, 1 a refused action, 2 a usage error. Commander's own errors (unknown
// option, missing argument…) are usage errors; commands added with addCommand do not inherit
// settings, so every command in the tree gets the override.
function throwCommanderErrors(command: Command): void {
  command.exitOverride((err) => {
    throw err;
  });
  if (command !== program)
    command.showHelpAfterError(`(run "${commandPath(command)} --help" for usage and an example)`);
  for (const sub of command.commands) throwCommanderErrors(sub);
}

function commandPath(command: Command): string {
  const names: string[] = [];
  for (let c: Command | null = command; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

throwCommanderErrors(program);
quietOnClosedPipes(() => process.argv[2] === 'start');
try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    process.exitCode = err.exitCode === 0 ? EXIT_OK : EXIT_USAGE;
  } else if (err instanceof CliError) {
    process.stderr.write(`smarthost: ${err.message}\n`);
    process.exitCode = err.exitCode;
  } else if (isFsError(err)) {
    // Permissions or the file system, not a bug: one line, no stack trace.
    process.stderr.write(`smarthost: ${describeFsError(err, verbOf(err))}\n`);
    process.exitCode = EXIT_REFUSED;
  } else {
    process.stderr.write(`smarthost: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = EXIT_REFUSED;
  }
}
