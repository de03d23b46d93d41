// Shared pieces of the operations end-to-end tests (test/e2e/ops-*.test.ts): scraping the
// relay's metrics port and reading values out of the Prometheus text format.

/** GET http://127.0.0.1:<port><path> → status and body (loopback only). */
export async function httpGet(port: number, path: string): Promise<{ status: number; body: string }> {
  const res = await fetch(`http://127.0.0.1:${port}${path}`);
  return { status: res.status, body: await res.text() };
}

/** Parses `name{a="b",c="d"} 12` lines of the Prometheus text format. */
export function parseMetrics(
  text: string,
): { name: string; labels: Record<string, string>; value: number }[] {
  const out: { name: string; labels: Record<string, string>; value: number }[] = [];
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!match) continue;
    const labels: Record<string, string> = {};
    for (const l of (match[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, '$1');
    }
    out.push({ name: match[1]!, labels, value: Number(match[3]) });
  }
  return out;
}

/**
 * The value of the series `name` whose labels include `labels`, summed when several match
 * (undefined when none does).
 */
export function metricValue(
  text: string,
  name: string,
  labels: Record<string, string> = {},
): number | undefined {
  const matches = parseMetrics(text).filter(
    (m) => m.name === name && Object.entries(labels).every(([k, v]) => m.labels[k] === v),
  );
  if (matches.length === 0) return undefined;
  return matches.reduce((sum, m) => sum + m.value, 0);
}
