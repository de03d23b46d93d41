// A refusal or failure with its SMTP reply: the basic code, the enhanced status code
// (RFC 3463) and words an admin can act on. smtp-server sends `responseCode` and the message
// text of an Error passed to a callback, so this is all the listener needs.

export class SmtpError extends Error {
  readonly responseCode: number;
  constructor(
    readonly code: number,
    readonly enhanced: string,
    readonly text: string,
    /** A short machine-readable reason, used in logs and metrics labels. */
    readonly reason: string = 'refused',
  ) {
    super(`${enhanced} ${text}`);
    this.name = 'SmtpError';
    this.responseCode = code;
  }

  get temporary(): boolean {
    return this.code >= 400 && this.code < 500;
  }
}

export const smtpErrors = {
  notAllowed: (ip: string) =>
    new SmtpError(
      550,
      '5.7.1',
      `Client ${ip} is not allowed to send through this relay: it is not in the allowlist and has not authenticated`,
      'not_allowed',
    ),
  tlsRequired: () =>
    new SmtpError(
      530,
      '5.7.0',
      'Must issue a STARTTLS command first (this port requires TLS)',
      'tls_required',
    ),
  insecureAuth: () =>
    new SmtpError(
      538,
      '5.7.11',
      'Encryption required for requested authentication mechanism: use STARTTLS first',
      'insecure_auth',
    ),
  authFailed: () => new SmtpError(535, '5.7.8', 'Authentication credentials invalid', 'auth_failed'),
  tooManyRecipients: (max: number, source: string) =>
    new SmtpError(
      452,
      '4.5.3',
      `Too many recipients: at most ${max} per message for source ${source}`,
      'recipients',
    ),
  messageTooBig: (max: number, source: string) =>
    new SmtpError(552, '5.3.4', `Message too big: the limit for source ${source} is ${max} bytes`, 'size'),
  diskFull: () =>
    new SmtpError(
      452,
      '4.3.1',
      'Insufficient system storage: the relay cannot queue mail now, try again later',
      'disk_full',
    ),
  spoolFailed: () =>
    new SmtpError(
      451,
      '4.3.0',
      'Temporary failure writing the message to the queue, try again later',
      'spool_error',
    ),
  shuttingDown: () => new SmtpError(421, '4.3.2', 'The relay is shutting down, try again later', 'shutdown'),
  badAddress: (address: string, why: string) =>
    new SmtpError(553, '5.1.3', `Address ${JSON.stringify(address)} rejected: ${why}`, 'bad_address'),
};
