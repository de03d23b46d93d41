// Every reply carries an RFC 3463 enhanced status code. smtp-server can add them itself
// (hideENHANCEDSTATUSCODES: false), but it derives the code from the basic code alone, so our
// own replies, which already say exactly which code applies ("550 5.7.1 Client ... is not
// allowed"), would come out doubled and wrong ("550 5.1.1 5.7.1 ..."). This wraps a connection's
// send() so that a reply whose text starts with an enhanced code goes out as written, and the
// library's own replies (syntax errors, bad sequence, too many clients) get the library's code.
import type { SMTPConnection } from 'smtp-server/lib/smtp-connection.js';

const ENHANCED_CODE = /^[245]\.\d{1,3}\.\d{1,3}(?:\s|$)/;

export function keepOwnEnhancedCodes(connection: SMTPConnection): void {
  const send = connection.send.bind(connection);
  connection.send = (code, data, context) => {
    if (typeof data === 'string' && ENHANCED_CODE.test(data)) return send(code, data, false);
    // The library asks for no code on greeting-time refusals ("421 Too many connected
    // clients", "501 Bad hostname syntax"); a refusal still gets one.
    if (context === false && code >= 400) return send(code, data);
    return send(code, data, context);
  };
}
