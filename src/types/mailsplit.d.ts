// The part of mailsplit's API that smarthost uses (the package ships no types).
declare module 'mailsplit' {
  export interface HeaderLine {
    /** Lower-cased header name. */
    key: string;
    /** The whole header as it stands, folding kept, without the final CRLF. */
    line: string;
  }
  export class Headers {
    constructor(headers: Buffer | string | HeaderLine[]);
    hasHeader(key: string): boolean;
    get(key: string): string[];
    getFirst(key: string): string;
    getList(): HeaderLine[];
    add(key: string, value: string, index?: number): void;
    addFormatted(key: string, line: string, index?: number): void;
    remove(key: string): void;
    update(key: string, value: string): void;
    build(lineEnd?: string): Buffer;
  }
}
