// The parameters of MAIL FROM and RCPT TO (RFC 5321 4.1.1.11, RFC 1869): which ones the relay
// takes, whether each is well formed, and what they ask for. Anything else is refused with
// "555 5.5.4" naming the parameter, rather than accepted and silently dropped (a client that
// asks for NOTIFY=NEVER must not get a bounce it was told it would not get).
//
// MAIL: SIZE (RFC 1870), BODY (RFC 6152), SMTPUTF8 (RFC 6531), RET and ENVID (RFC 3461 DSN),
//       AUTH (RFC 4954: accepted and ignored, e.g. Postfix's AUTH=<>).
// RCPT: NOTIFY and ORCPT (RFC 3461 DSN).
// REQUIRETLS (RFC 8689) is not taken: the relay cannot promise TLS on every later hop.
//
// The check works on the command as the client wrote it (smtp-server decodes xtext, drops empty
// keys and converts punycode domains before the application sees them), so that malformed
// xtext, an empty key or a non-ASCII address without SMTPUTF8 can be told apart and named.
import type { DsnNotify, DsnRequest } from '../spool/entry.js';
import { readPath } from './envelope-syntax.js';
import { SmtpError } from './errors.js';

export interface MailParameters {
  size?: number;
  bodyType?: '7bit' | '8bitmime';
  smtpUtf8: boolean;
  dsn?: DsnRequest;
}

export interface RcptParameters {
  notify?: DsnNotify[];
  orcpt?: string;
}

export type Checked<T> = { ok: true; value: T } | { ok: false; error: SmtpError };

/** RFC 3461 4.4 and 4.2: ENVID at most 100 characters, ORCPT at most 500. */
export const MAX_ENVID = 100;
export const MAX_ORCPT = 500;
/** Long enough for any real address in AUTH=; a bound for what we read at all. */
const MAX_AUTH = 500;
const MAX_VALUE = 1000;

const MAIL_KEYS = ['SIZE', 'BODY', 'SMTPUTF8', 'RET', 'ENVID', 'AUTH'] as const;
const RCPT_KEYS = ['NOTIFY', 'ORCPT'] as const;
/** esmtp-keyword (RFC 5321 4.1.2). */
const KEYWORD = /^[A-Za-z0-9][A-Za-z0-9-]*$/;
/** xtext (RFC 3461 4): printable ASCII except "+" and "=", or "+" and two hex digits. */
const XTEXT = /^(?:[!-*,-<>-~]|\+[0-9A-Fa-f]{2})*$/;
/** addr-type (an atom) ";" then the address. */
const ORCPT_SYNTAX = /^([A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+);(.+)$/s;

function refuse(command: string, text: string): { ok: false; error: SmtpError } {
  return { ok: false, error: new SmtpError(555, '5.5.4', `${command} ${text}`, 'bad_parameter') };
}

function printable(text: string): boolean {
  return /^[\x20-\x7e]*$/.test(text);
}

/** A value from xtext, or undefined when it is not valid xtext or decodes to control characters. */
export function decodeXtext(value: string): string | undefined {
  if (!XTEXT.test(value)) return undefined;
  const decoded = value.replace(/\+([0-9A-Fa-f]{2})/g, (_m, hex: string) =>
    String.fromCharCode(parseInt(hex, 16)),
  );
  return printable(decoded) ? decoded : undefined;
}

/** xtext for a value we pass on or write (the inverse of decodeXtext). */
export function encodeXtext(value: string): string {
  return Buffer.from(value, 'utf8').reduce(
    (out, c) =>
      out +
      (c < 0x21 || c > 0x7e || c === 0x2b || c === 0x3d
        ? `+${c.toString(16).toUpperCase().padStart(2, '0')}`
        : String.fromCharCode(c)),
    '',
  );
}

interface Written {
  /** The address as written (brackets removed). */
  address: string;
  params: { key: string; value: string | undefined }[];
}

/**
 * Splits "MAIL FROM:<a@b> SIZE=10 RET=HDRS" into the address and its parameters, as written; the
 * path is read whole (a quoted local part may hold spaces), with or without its brackets.
 */
export function splitCommand(command: string): Written {
  const argument = command.slice(command.indexOf(':') + 1);
  const path = readPath(argument);
  let address: string;
  let tokens: string[];
  if (path) {
    address = path.path;
    tokens = path.rest.split(/[ \t]+/);
  } else {
    const [written = '', ...others] = argument.trim().split(/[ \t]+/);
    address = /^<.*>$/s.test(written) ? written.slice(1, -1) : written;
    tokens = others;
  }
  const params = tokens
    .filter((t) => t !== '')
    .map((token) => {
      const eq = token.indexOf('=');
      return eq === -1
        ? { key: token, value: undefined }
        : { key: token.slice(0, eq), value: token.slice(eq + 1) };
    });
  return { address, params };
}

/**
 * Names and duplicates, common to MAIL and RCPT: every key a valid keyword, known, given once;
 * a value no longer than any parameter can need. Returns the parameters by upper-case name.
 */
function checkNames(
  command: string,
  written: Written,
  known: readonly string[],
): Checked<Map<string, string | undefined>> {
  const seen = new Map<string, string | undefined>();
  for (const { key, value } of written.params) {
    if (key === '') return refuse(command, 'has a parameter without a name (a word starting with "=")');
    if (!KEYWORD.test(key) || key.length > 40)
      return refuse(command, 'has a parameter whose name is not a keyword (letters, digits and "-")');
    const name = key.toUpperCase();
    if (!known.includes(name)) {
      return refuse(command, `parameter ${name} is not supported (this relay takes ${known.join(', ')})`);
    }
    if (seen.has(name)) return refuse(command, `parameter ${name} is given more than once`);
    if (value !== undefined && value.length > MAX_VALUE)
      return refuse(command, `parameter ${name} is too long`);
    seen.set(name, value);
  }
  return { ok: true, value: seen };
}

/** 553 5.6.7 for an address with non-ASCII characters in a transaction without SMTPUTF8. */
function needsSmtpUtf8(command: string): { ok: false; error: SmtpError } {
  return {
    ok: false,
    error: new SmtpError(
      553,
      '5.6.7',
      `${command} address has non-ASCII characters: the client must send SMTPUTF8 on MAIL FROM (RFC 6531)`,
      'bad_address',
    ),
  };
}

/** The MAIL FROM command as written: its parameters checked and read. */
export function checkMailCommand(command: string): Checked<MailParameters> {
  const name = 'MAIL FROM';
  const written = splitCommand(command);
  const names = checkNames(name, written, MAIL_KEYS);
  if (!names.ok) return names;
  const params = names.value;
  const result: MailParameters = { smtpUtf8: false };
  const needValue = (key: string): Checked<string> | undefined => {
    if (!params.has(key)) return undefined;
    const value = params.get(key);
    if (!value) return refuse(name, `parameter ${key} needs a value (${key}=...)`);
    return { ok: true, value };
  };
  const size = needValue('SIZE');
  if (size && !size.ok) return size;
  if (size?.ok) {
    if (!/^\d{1,20}$/.test(size.value)) return refuse(name, 'parameter SIZE must be a number of bytes');
    result.size = Number(size.value);
  }
  const body = needValue('BODY');
  if (body && !body.ok) return body;
  if (body?.ok) {
    const type = body.value.toUpperCase();
    if (type !== '7BIT' && type !== '8BITMIME')
      return refuse(name, 'parameter BODY must be 7BIT or 8BITMIME');
    result.bodyType = type === '7BIT' ? '7bit' : '8bitmime';
  }
  if (params.has('SMTPUTF8')) {
    if (params.get('SMTPUTF8') !== undefined) return refuse(name, 'parameter SMTPUTF8 takes no value');
    result.smtpUtf8 = true;
  }
  const dsn: DsnRequest = {};
  const ret = needValue('RET');
  if (ret && !ret.ok) return ret;
  if (ret?.ok) {
    const value = ret.value.toUpperCase();
    if (value !== 'FULL' && value !== 'HDRS') return refuse(name, 'parameter RET must be FULL or HDRS');
    dsn.ret = value;
  }
  const envid = needValue('ENVID');
  if (envid && !envid.ok) return envid;
  if (envid?.ok) {
    const decoded = decodeXtext(envid.value);
    if (decoded === undefined)
      return refuse(name, 'parameter ENVID is not valid xtext (printable ASCII, "+XX" for others)');
    if (decoded.length > MAX_ENVID)
      return refuse(name, `parameter ENVID is longer than ${MAX_ENVID} characters`);
    dsn.envid = decoded;
  }
  if (params.has('AUTH')) {
    // RFC 4954 5: "<>" or an xtext mailbox. We do not act on it (the login is what counts).
    const value = params.get('AUTH');
    if (!value || value.length > MAX_AUTH || (value !== '<>' && decodeXtext(value) === undefined))
      return refuse(name, 'parameter AUTH must be <> or an xtext address');
  }
  if (dsn.ret || dsn.envid !== undefined) result.dsn = dsn;
  if (!result.smtpUtf8 && !printable(written.address)) return needsSmtpUtf8(name);
  return { ok: true, value: result };
}

/** The RCPT TO command as written, in a transaction with (or without) SMTPUTF8. */
export function checkRcptCommand(command: string, smtpUtf8: boolean): Checked<RcptParameters> {
  const name = 'RCPT TO';
  const written = splitCommand(command);
  const names = checkNames(name, written, RCPT_KEYS);
  if (!names.ok) return names;
  const params = names.value;
  const result: RcptParameters = {};
  if (params.has('NOTIFY')) {
    const value = params.get('NOTIFY');
    const parts = (value ?? '').toUpperCase().split(',');
    const valid = ['NEVER', 'SUCCESS', 'FAILURE', 'DELAY'];
    if (!value || parts.some((p) => !valid.includes(p)))
      return refuse(name, 'parameter NOTIFY must be NEVER, or a list of SUCCESS, FAILURE and DELAY');
    if (parts.includes('NEVER') && parts.length > 1)
      return refuse(name, 'parameter NOTIFY=NEVER cannot be combined with SUCCESS, FAILURE or DELAY');
    if (new Set(parts).size !== parts.length) return refuse(name, 'parameter NOTIFY names a value twice');
    result.notify = parts as DsnNotify[];
  }
  if (params.has('ORCPT')) {
    const value = params.get('ORCPT');
    const match = value ? ORCPT_SYNTAX.exec(value) : null;
    const decoded = match ? decodeXtext(match[2]!) : undefined;
    if (!match || decoded === undefined || decoded === '')
      return refuse(
        name,
        'parameter ORCPT must be an address type, ";" and an xtext address (rfc822;a@example.com)',
      );
    const orcpt = `${match[1]!};${decoded}`;
    if (orcpt.length > MAX_ORCPT)
      return refuse(name, `parameter ORCPT is longer than ${MAX_ORCPT} characters`);
    result.orcpt = orcpt;
  }
  if (!smtpUtf8 && !printable(written.address)) return needsSmtpUtf8(name);
  return { ok: true, value: result };
}
