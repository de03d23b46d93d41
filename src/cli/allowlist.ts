// `smarthost allowlist list|add|remove|test`: which networks may send without a login. The
// editor protects the admin from the one mistake that matters most, an open relay.
import { isIP } from 'node:net';
import { Command } from 'commander';
import type { Document } from 'yaml';
import { ConfigEditError, ensureSeq, getSeq, seqMaps, stringAt } from '../config/edit.js';
import type { Config, Policy } from '../config/load.js';
import { SourceResolver } from '../policy/sources.js';
import { editAndApply, loadConfigOrExit } from './common.js';
import { overlaps, parseRange, contains, type Range } from '../policy/cidr.js';
import { allowlistProblem, relayRisk } from '../policy/open-relay.js';
import { describePolicy } from './policy-text.js';
import { printJson, printTable, say, usage, warn, withConfigOption, refuse } from './output.js';

/** What `allowlist:` holds when the file does not say: written out when the key is created. */
const BUILT_IN = [
  { cidr: '127.0.0.0/8', name: 'localhost' },
  { cidr: '::1/128', name: 'localhost6' },
];

interface AddOptions {
  config?: string;
  name: string;
  sender?: string;
  rateLimit?: string;
  force?: boolean;
}

export function allowlistCommand(): Command {
  const cmd = new Command('allowlist')
    .description('which networks may send without logging in')
    .addHelpText(
      'after',
      '\nExamples:\n  smarthost allowlist list\n  smarthost allowlist add 10.20.30.0/24 --name printers\n  smarthost allowlist test 10.20.30.7',
    );

  withConfigOption(
    cmd
      .command('list')
      .description('show the allowlist entries')
      .option('--json', 'print JSON instead of a table'),
    '  smarthost allowlist list --json',
  ).action((opts: { config?: string; json?: boolean }) => {
    const config = loadConfigOrExit(opts.config);
    const rows = config.allowlist.map((e) => ({
      name: e.name,
      cidr: e.cidr,
      sender: e.sender,
      rateLimit: e.rateLimit?.text,
      policy: describePolicy(ownPolicy(e), { skip: ['sender', 'rateLimit'] }) || undefined,
    }));
    if (opts.json) return printJson(rows);
    printTable(rows, [
      { key: 'name', title: 'NAME' },
      { key: 'cidr', title: 'CIDR' },
      { key: 'sender', title: 'SENDER' },
      { key: 'rateLimit', title: 'RATE LIMIT' },
      { key: 'policy', title: 'OTHER POLICY' },
    ]);
  });

  withConfigOption(
    cmd
      .command('add')
      .description('allow a network (an address or CIDR range) to send without a login')
      .argument('<cidr>', 'an address or range, e.g. 10.20.30.0/24 or fd00:1::/64')
      .requiredOption('--name <name>', 'a unique name for the entry, shown in logs (e.g. printers)')
      .option('--sender <address>', 'send everything from this network as this address')
      .option('--rate-limit <rate>', 'messages allowed, e.g. 60/min, 1000/hour')
      .option(
        '--force',
        'allow a range that includes public internet addresses (writes publicRange: true; never /0-/7)',
      ),
    '  smarthost allowlist add 10.20.30.0/24 --name printers --sender scanner@corp.example --rate-limit 60/min',
  ).action(async (cidr: string, opts: AddOptions) => {
    const range = parseRange(cidr);
    if (!range) {
      usage(
        `"${cidr}" is not an IP address or CIDR range (examples: 10.20.30.0/24, 192.168.1.10, fd00:1::/64)`,
      );
    }
    checkNotPublic(range, Boolean(opts.force));
    await editAndApply(opts.config, (doc) => addEntry(doc, cidr, range, opts));
    say(
      `added ${opts.name}: ${range.text}` +
        (opts.sender ? `, sends as ${opts.sender}` : '') +
        (opts.rateLimit ? `, at most ${opts.rateLimit}` : ''),
    );
  });

  withConfigOption(
    cmd
      .command('remove')
      .description('remove an entry, given its CIDR or its name')
      .argument('<cidr-or-name>', 'the entry to remove'),
    '  smarthost allowlist remove printers\n  smarthost allowlist remove 10.20.30.0/24',
  ).action(async (target: string, opts: { config?: string }) => {
    let removed = '';
    await editAndApply(opts.config, (doc) => {
      const result = removeEntry(doc, target);
      removed = result.removed;
      return result.notes;
    });
    say(`removed ${removed}`);
  });

  withConfigOption(
    cmd
      .command('test')
      .description('which entry an address matches, and the policy it gets')
      .argument('<ip>', 'a client address, e.g. 10.20.30.7')
      .option('--json', 'print JSON'),
    '  smarthost allowlist test 10.20.30.7',
  ).action((ip: string, opts: { config?: string; json?: boolean }) => testAddress(ip, opts));

  return cmd;
}

function ownPolicy(entry: Config['allowlist'][number]): Policy {
  const { cidr: _c, name: _n, publicRange: _p, ...own } = entry;
  return own;
}

/** Every name in use, allowlist and users together (they share one namespace). */
function namesInUse(doc: Document): Map<string, string> {
  const names = new Map<string, string>();
  for (const { map } of seqMaps(getSeq(doc, 'allowlist'))) {
    const name = stringAt(map, 'name');
    if (name) names.set(name, `allowlist entry ${name} (${stringAt(map, 'cidr') ?? '?'})`);
  }
  for (const { map } of seqMaps(getSeq(doc, 'users'))) {
    const name = stringAt(map, 'name');
    if (name) names.set(name, `user ${name}`);
  }
  return names;
}

function addEntry(doc: Document, input: string, range: Range, opts: AddOptions): string[] {
  const notes: string[] = [];
  if (range.hostBitsSet) {
    notes.push(`${input} has host bits set; the range it means is ${range.text}, which is what was written`);
  }
  const taken = namesInUse(doc).get(opts.name);
  if (taken)
    throw new ConfigEditError(
      `refused: the name "${opts.name}" is already used by ${taken}; names must be unique`,
    );

  const seeded = doc.get('allowlist', true) === undefined;
  const seq = ensureSeq(doc, 'allowlist', BUILT_IN);
  if (seeded) {
    notes.push(
      'the config had no allowlist: yet, so the built-in entries (localhost 127.0.0.0/8, localhost6 ::1/128) were written out too, to keep them',
    );
  }
  for (const { map } of seqMaps(seq)) {
    const other = parseRange(stringAt(map, 'cidr') ?? '');
    if (!other) continue;
    const otherName = stringAt(map, 'name') ?? '?';
    if (other.family === range.family && other.start === range.start && other.end === range.end) {
      throw new ConfigEditError(`refused: ${range.text} is already in the allowlist as ${otherName}`);
    }
    if (overlaps(other, range)) {
      const how = contains(other, range) ? 'lies inside' : contains(range, other) ? 'contains' : 'overlaps';
      notes.push(
        `${range.text} ${how} ${otherName} (${other.text}): for addresses in both, the most specific entry applies`,
      );
    }
  }
  const entry: Record<string, string | boolean> = { cidr: range.text, name: opts.name };
  // The acknowledgement the config's validation asks of a public range (policy/open-relay.ts).
  if (relayRisk(range)) entry.publicRange = true;
  if (opts.sender) entry.sender = opts.sender;
  if (opts.rateLimit) entry.rateLimit = opts.rateLimit;
  seq.add(doc.createNode(entry));
  return notes;
}

function checkNotPublic(range: Range, force: boolean): void {
  const risk = relayRisk(range);
  if (!risk) return;
  if (risk.level === 'open') {
    // No flag allows it: the config's validation would refuse it too.
    refuse(`refused: ${allowlistProblem(range.text, false) ?? risk.what}`);
  }
  if (!force) {
    refuse(
      `refused: ${risk.what}.\n` +
        'Allowing it would make this relay an OPEN RELAY for the internet: anyone who can reach its port could send mail ' +
        'through your ESP account, as your company, without a login. Spammers find open relays within hours.\n' +
        'Allow only your own networks (e.g. 10.20.30.0/24). If this range really is yours and the relay cannot be reached ' +
        'from the internet, add --force (the entry gets publicRange: true, which says so).',
    );
  }
  warn(
    `${risk.what}. Added because of --force, with publicRange: true: any client in it may send without a login. ` +
      'Make sure the relay cannot be reached from the internet, or this is an open relay.',
  );
}

function removeEntry(doc: Document, target: string): { removed: string; notes: string[] } {
  const seq = getSeq(doc, 'allowlist');
  const asRange = parseRange(target);
  const match = seqMaps(seq).find(({ map }) => {
    if (stringAt(map, 'name') === target) return true;
    const cidr = parseRange(stringAt(map, 'cidr') ?? '');
    return Boolean(asRange && cidr && cidr.text === asRange.text);
  });
  if (!seq || !match) {
    throw new ConfigEditError(
      `refused: no allowlist entry named or covering exactly "${target}" (see smarthost allowlist list)`,
    );
  }
  const name = stringAt(match.map, 'name');
  const cidr = stringAt(match.map, 'cidr');
  seq.delete(match.index);
  const notes: string[] = [];
  if (seq.items.length === 0) {
    notes.push('the allowlist is now empty: only clients that log in (smarthost user add) can send');
  }
  return { removed: `${name} (${cidr})`, notes };
}

function testAddress(ip: string, opts: { config?: string; json?: boolean }): void {
  if (!isIP(ip)) usage(`"${ip}" is not an IP address (examples: 10.20.30.7, fd00:1::5)`);
  const config = loadConfigOrExit(opts.config);
  const source = new SourceResolver(config).byAddress(ip);
  if (!source) {
    if (opts.json) printJson({ ip, match: null, allowed: false });
    else {
      say(`${ip} matches no allowlist entry: a connection from it would be refused`);
      say('(unless it logs in as a user: see smarthost user list)');
    }
    process.exitCode = 1;
    return;
  }
  if (opts.json) {
    printJson({ ip, match: { name: source.name, cidr: source.cidr }, allowed: true, policy: source.policy });
    return;
  }
  say(`${ip} matches ${source.name} (${source.cidr}): it may send without a login`);
  say('effective policy (the entry over defaults:):');
  const text = describePolicy(source.policy, { multiline: true });
  say(text || '  (no limits beyond the global ones)');
}
