// `smarthost user add|passwd|remove|list`: devices and applications that log in (SMTP AUTH)
// rather than being allowed by address. Only an scrypt hash of the password is stored.
import { Command } from 'commander';
import type { Document } from 'yaml';
import { ConfigEditError, ensureSeq, getSeq, seqMaps, stringAt } from '../config/edit.js';
import { hashPassword } from '../policy/passwords.js';
import { assertConfigWritable, editAndApply, loadConfigOrExit, readStdin } from './common.js';
import { describePolicy } from './policy-text.js';
import { printJson, printTable, say, usage, withConfigOption, CliError, EXIT_REFUSED } from './output.js';
import { SOURCE_NAME } from '../config/schema.js';

export function userCommand(): Command {
  const cmd = new Command('user')
    .description('logins (SMTP AUTH) for devices and applications')
    .addHelpText(
      'after',
      '\nExamples:\n  smarthost user add crm --sender crm@corp.example\n  echo "$PASS" | smarthost user add crm --password-stdin\n  smarthost user list',
    );

  withConfigOption(
    cmd
      .command('add')
      .description('add a login; asks for the password (or reads it from stdin)')
      .argument('<name>', 'the login name, e.g. crm')
      .option('--sender <address>', 'send everything from this login as this address')
      .option('--password-stdin', 'read the password from stdin (for scripts)'),
    '  smarthost user add crm --sender crm@corp.example\n  printf %s "$CRM_SMTP_PASSWORD" | smarthost user add crm --password-stdin',
  ).action(async (name: string, opts: { config?: string; sender?: string; passwordStdin?: boolean }) => {
    checkName(name);
    assertConfigWritable(opts.config);
    const password = await readPassword(name, Boolean(opts.passwordStdin));
    const hash = await hashPassword(password);
    await editAndApply(opts.config, (doc) => {
      const taken = nameOwner(doc, name);
      if (taken)
        throw new ConfigEditError(
          `refused: the name "${name}" is already used by ${taken}; names must be unique`,
        );
      const entry: Record<string, string> = { name, password: hash };
      if (opts.sender) entry.sender = opts.sender;
      ensureSeq(doc, 'users').add(doc.createNode(entry));
      return [];
    });
    say(`added user ${name} (only an scrypt hash of the password is stored)`);
  });

  withConfigOption(
    cmd
      .command('passwd')
      .description("change a login's password")
      .argument('<name>', 'the login name')
      .option('--password-stdin', 'read the new password from stdin (for scripts)'),
    '  smarthost user passwd crm',
  ).action(async (name: string, opts: { config?: string; passwordStdin?: boolean }) => {
    assertConfigWritable(opts.config);
    const password = await readPassword(name, Boolean(opts.passwordStdin));
    const hash = await hashPassword(password);
    await editAndApply(opts.config, (doc) => {
      findUser(doc, name).map.set('password', hash);
      return [];
    });
    say(`changed the password of ${name}`);
  });

  withConfigOption(
    cmd.command('remove').description('remove a login').argument('<name>', 'the login name'),
    '  smarthost user remove crm',
  ).action(async (name: string, opts: { config?: string }) => {
    await editAndApply(opts.config, (doc) => {
      const { seq, index } = findUser(doc, name);
      seq.delete(index);
      return [];
    });
    say(`removed user ${name}`);
  });

  withConfigOption(
    cmd.command('list').description('show the logins (never their passwords)').option('--json', 'print JSON'),
    '  smarthost user list --json',
  ).action((opts: { config?: string; json?: boolean }) => {
    const config = loadConfigOrExit(opts.config);
    const rows = config.users.map(({ name, password: _p, ...own }) => ({
      name,
      sender: own.sender,
      rateLimit: own.rateLimit?.text,
      policy: describePolicy(own, { skip: ['sender', 'rateLimit'] }) || undefined,
    }));
    if (opts.json) return printJson(rows);
    printTable(
      rows,
      [
        { key: 'name', title: 'NAME' },
        { key: 'sender', title: 'SENDER' },
        { key: 'rateLimit', title: 'RATE LIMIT' },
        { key: 'policy', title: 'OTHER POLICY' },
      ],
      '(no users: add one with smarthost user add NAME)',
    );
  });

  return cmd;
}

function checkName(name: string): void {
  if (!SOURCE_NAME.test(name))
    usage(`"${name}" is not a valid name: use letters, digits, ".", "_" or "-" (up to 64)`);
}

function nameOwner(doc: Document, name: string): string | undefined {
  for (const { map } of seqMaps(getSeq(doc, 'allowlist'))) {
    if (stringAt(map, 'name') === name) return `allowlist entry ${name} (${stringAt(map, 'cidr') ?? '?'})`;
  }
  for (const { map } of seqMaps(getSeq(doc, 'users'))) {
    if (stringAt(map, 'name') === name) return `user ${name}`;
  }
  return undefined;
}

function findUser(doc: Document, name: string) {
  const seq = getSeq(doc, 'users');
  const found = seqMaps(seq).find(({ map }) => stringAt(map, 'name') === name);
  if (!seq || !found)
    throw new ConfigEditError(`refused: there is no user "${name}" (see smarthost user list)`);
  return { seq, index: found.index, map: found.map };
}

/** From stdin (--password-stdin), else asked twice on the terminal without echo. */
async function readPassword(name: string, fromStdin: boolean): Promise<string> {
  if (fromStdin) {
    // One trailing newline is what `echo` adds; anything else is part of the password.
    const password = await readStdin();
    if (!password) throw new CliError('refused: the password read from stdin is empty', EXIT_REFUSED);
    return password;
  }
  if (!process.stdin.isTTY) {
    usage('no terminal to ask for the password on: use --password-stdin to give it on stdin');
  }
  const first = await promptHidden(`Password for ${name}: `);
  if (!first) throw new CliError('refused: empty password', EXIT_REFUSED);
  if ((await promptHidden('Again, to confirm: ')) !== first) {
    throw new CliError('refused: the two passwords differ; nothing was changed', EXIT_REFUSED);
  }
  return first;
}

/** Reads a line from the terminal with echo off. */
function promptHidden(prompt: string): Promise<string> {
  const stdin = process.stdin;
  process.stderr.write(prompt);
  return new Promise((resolve) => {
    let value = '';
    stdin.setRawMode(true);
    stdin.resume();
    stdin.setEncoding('utf8');
    const done = (result: string | undefined) => {
      stdin.setRawMode(false);
      stdin.pause();
      stdin.off('data', onData);
      process.stderr.write('\n');
      if (result === undefined) process.exit(130);
      resolve(result);
    };
    const onData = (chunk: string) => {
      for (const ch of chunk) {
        if (ch === '\r' || ch === '\n') return done(value);
        if (ch === '\u0003' || ch === '\u0004') return done(undefined); // Ctrl-C, Ctrl-D
        if (ch === '\u007f' || ch === '\b') value = value.slice(0, -1);
        else if (ch >= ' ') value += ch;
      }
    };
    stdin.on('data', onData);
  });
}
