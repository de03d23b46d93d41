// Files the config points at (passwords, secrets, CA certificates), read while it loads: a file
// that cannot be read becomes a problem naming the key, so every such error reads the same.
import { readFileSync } from 'node:fs';

/**
 * The text of `file` (resolved by `resolvePath`), or undefined with "key: cannot read "file":
 * CODE" (and `note`) pushed to `problems`.
 */
export function readOrReport(
  file: string,
  key: string,
  resolvePath: (p: string) => string,
  problems: string[],
  note = '',
): string | undefined {
  try {
    return readFileSync(resolvePath(file), 'utf8');
  } catch (err) {
    problems.push(
      `${key}: cannot read ${JSON.stringify(file)}: ${(err as NodeJS.ErrnoException).code ?? err}${note}`,
    );
    return undefined;
  }
}
