// The part of libmime's API that smarthost uses (the package ships no types). libmime comes
// with mailsplit, which uses it to parse headers. It is CommonJS: use the default import.
declare module 'libmime' {
  interface Libmime {
    /** Decodes RFC 2047 encoded words ("=?UTF-8?Q?...?=") in a header value. */
    decodeWords(value: string): string;
    /** Encodes a value as RFC 2047 encoded word(s), split to `maxLength` when given. */
    encodeWord(value: string, encoding?: 'Q' | 'B', maxLength?: number): string;
  }
  const libmime: Libmime;
  export default libmime;
}
