// The `smarthost` command line. Each subcommand lives in its own module.
import { Command } from 'commander';
import { startCommand } from './start.js';

const program = new Command();
program
  .name('smarthost')
  .description('An SMTP smarthost for company networks: devices send here, it forwards to your ESP.')
  .showHelpAfterError();

program
  .command('start')
  .description('run the relay (what `npm start` runs)')
  .option(
    '-c, --config <file>',
    'config file (default: $SMARTHOST_CONFIG, else ./smarthost.yml, else built-in defaults)',
  )
  .addHelpText('after', '\nExample:\n  smarthost start -c /etc/smarthost/smarthost.yml')
  .action(startCommand);

await program.parseAsync(process.argv);
