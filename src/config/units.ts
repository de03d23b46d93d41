// Parsing of the human-friendly units used in the config file: durations ("72h"),
// sizes ("25MB") and rates ("60/min"). Each parser returns undefined for input it
// does not understand, so the schema can report the key and the allowed forms.

const DURATION_UNITS: Record<string, number> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  min: 60_000,
  h: 3_600_000,
  d: 86_400_000,
};

/** "90s", "5m", "72h", "2d", "250ms" or a bare number of seconds → milliseconds. */
export function parseDuration(input: string | number): number | undefined {
  if (typeof input === 'number') return Number.isFinite(input) && input >= 0 ? input * 1000 : undefined;
  const match = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|min|h|d)?\s*$/i.exec(input);
  if (!match) return undefined;
  const unit = (match[2] ?? 's').toLowerCase();
  return Number(match[1]) * (DURATION_UNITS[unit] ?? 1000);
}

const SIZE_UNITS: Record<string, number> = {
  b: 1,
  k: 1024,
  kb: 1024,
  m: 1024 ** 2,
  mb: 1024 ** 2,
  g: 1024 ** 3,
  gb: 1024 ** 3,
};

/** "25MB", "512KB", "1GB" (binary multiples, as mail clients count) or a number of bytes. */
export function parseSize(input: string | number): number | undefined {
  if (typeof input === 'number') return Number.isInteger(input) && input >= 0 ? input : undefined;
  const match = /^\s*(\d+(?:\.\d+)?)\s*(b|k|kb|m|mb|g|gb)?\s*$/i.exec(input);
  if (!match) return undefined;
  return Math.floor(Number(match[1]) * (SIZE_UNITS[(match[2] ?? 'b').toLowerCase()] ?? 1));
}

export interface Rate {
  /** How many events are allowed ... */
  count: number;
  /** ... per this many milliseconds. */
  perMs: number;
  /** The rate as written, for messages to the admin. */
  text: string;
}

const RATE_PERIODS: Record<string, number> = {
  s: 1000,
  sec: 1000,
  second: 1000,
  m: 60_000,
  min: 60_000,
  minute: 60_000,
  h: 3_600_000,
  hour: 3_600_000,
  d: 86_400_000,
  day: 86_400_000,
};

/** "60/min", "1000/hour", "5000/day", "14/s" → a Rate. */
export function parseRate(input: string): Rate | undefined {
  const match = /^\s*(\d+)\s*\/\s*([a-z]+)\s*$/i.exec(input);
  if (!match) return undefined;
  const perMs = RATE_PERIODS[(match[2] ?? '').toLowerCase()];
  const count = Number(match[1]);
  if (!perMs || count < 1) return undefined;
  return { count, perMs, text: `${count}/${match[2]}` };
}

/** Milliseconds as a short human string: 90000 → "1m30s". */
export function formatDuration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)}ms`;
  let seconds = Math.round(ms / 1000);
  const parts: string[] = [];
  for (const [unit, size] of [
    ['d', 86_400],
    ['h', 3_600],
    ['m', 60],
  ] as const) {
    if (seconds >= size) {
      parts.push(`${Math.floor(seconds / size)}${unit}`);
      seconds %= size;
    }
  }
  if (seconds || parts.length === 0) parts.push(`${seconds}s`);
  return parts.join('');
}
