// The command line of `sendmail` as scripts write it (Postfix's and Sendmail's flags, getopt
// style: `-ti`, `-f addr` or `-faddr`, options and recipients in any order, `--` ends options).
// Flags that only tune an MTA we are not (-oem, -odb, -U…) are accepted and ignored, so a
// script written for Postfix runs unchanged.

/** sysexits.h: what scripts and cron look at. */
export const EX = {
  OK: 0,
  USAGE: 64,
  DATAERR: 65,
  NOINPUT: 66,
  NOUSER: 67,
  UNAVAILABLE: 69,
  SOFTWARE: 70,
  OSERR: 71,
  CANTCREAT: 73,
  IOERR: 74,
  TEMPFAIL: 75,
  NOPERM: 77,
  CONFIG: 78,
} as const;

export class SendmailError extends Error {
  constructor(
    message: string,
    readonly exitCode: number,
  ) {
    super(message);
    this.name = 'SendmailError';
  }
}

export interface SendmailArgs {
  /** -t: recipients from To, Cc and Bcc too. */
  extract: boolean;
  /** -i / -oi: a line of a single "." does not end the message. */
  ignoreDots: boolean;
  /** -f / -r: the envelope sender ('' for -f '<>'). */
  from?: string;
  /** -F: the sender's full name, for a From header the message lacks. */
  fullName?: string;
  verbose: boolean;
  /** -C: the relay's config file. */
  config?: string;
  /** -bm (default), -bs (SMTP on stdin and stdout: sendmail-smtp.ts), -bi; others refused. */
  mode: string;
  recipients: string[];
  /** Flags accepted without effect, for -v. */
  ignored: string[];
}

/** Flags taking a value (the rest of the word, or the next word). */
const WITH_VALUE = new Set(['f', 'r', 'F', 'C', 'o', 'b', 'B', 'N', 'R', 'V', 'L', 'h', 'O', 'X']);
/** Flags without a value that change nothing here. */
const IGNORED = new Set(['U', 'm', 'n', 'x']);

export function parseSendmailArgs(argv: string[]): SendmailArgs {
  const args: SendmailArgs = {
    extract: false,
    ignoreDots: false,
    verbose: false,
    mode: 'm',
    recipients: [],
    ignored: [],
  };
  for (let i = 0; i < argv.length; i++) {
    const word = argv[i]!;
    if (word === '--') {
      args.recipients.push(...argv.slice(i + 1));
      break;
    }
    if (!word.startsWith('-') || word === '-') {
      args.recipients.push(word);
      continue;
    }
    for (let j = 1; j < word.length; j++) {
      const flag = word[j]!;
      if (WITH_VALUE.has(flag)) {
        let value = word.slice(j + 1);
        if (!value) {
          if (i + 1 >= argv.length) throw new SendmailError(`option -${flag} needs a value`, EX.USAGE);
          value = argv[++i]!;
        }
        applyValue(args, flag, value);
        break;
      }
      if (flag === 't') args.extract = true;
      else if (flag === 'i') args.ignoreDots = true;
      else if (flag === 'v') args.verbose = true;
      else if (IGNORED.has(flag)) args.ignored.push(`-${flag}`);
      else
        throw new SendmailError(
          `unknown option -${flag} (see README, "Linux servers and scripts")`,
          EX.USAGE,
        );
    }
  }
  return args;
}

function applyValue(args: SendmailArgs, flag: string, value: string): void {
  switch (flag) {
    case 'f':
    case 'r':
      args.from = value === '<>' ? '' : value.replace(/^<(.*)>$/, '$1');
      return;
    case 'F':
      args.fullName = value;
      return;
    case 'C':
      args.config = value;
      return;
    case 'o':
      // -oi is -i; -oem, -oee, -odb, -odi, -om and the other -o options tune Sendmail itself.
      if (value === 'i') args.ignoreDots = true;
      else args.ignored.push(`-o${value}`);
      return;
    case 'b':
      args.mode = value;
      return;
    default:
      // -B body type, -N notify, -R ret, -V envid, -L, -h, -O, -X: accepted, not used.
      args.ignored.push(`-${flag} ${value}`);
  }
}
