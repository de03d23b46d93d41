// deploy/smarthost.example.yml must stay a valid config that documents every key: it is parsed
// with the real loader, and every key the schema knows must appear in it (set or commented).
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { parseConfigText } from '../../src/config/load.js';
import { configSchema } from '../../src/config/schema.js';
import { makeTempDirSync } from '../helpers/tmp.js';

const root = fileURLToPath(new URL('../../../', import.meta.url));
const exampleFile = path.join(root, 'deploy', 'smarthost.example.yml');

/** Every object key in the schema, as dotted paths ("upstream.backoff.initial"). */
function schemaKeys(schema: unknown, prefix = '', out = new Set<string>(), depth = 0): Set<string> {
  if (depth > 20 || !schema || typeof schema !== 'object') return out;
  const def = (schema as { _zod?: { def?: Record<string, unknown> } })._zod?.def;
  if (!def) return out;
  switch (def.type) {
    case 'object':
      for (const [key, value] of Object.entries(def.shape as Record<string, unknown>)) {
        const name = prefix ? `${prefix}.${key}` : key;
        out.add(name);
        schemaKeys(value, name, out, depth + 1);
      }
      break;
    case 'array':
      schemaKeys(def.element, prefix, out, depth + 1);
      break;
    case 'union':
      for (const option of def.options as unknown[]) schemaKeys(option, prefix, out, depth + 1);
      break;
    case 'pipe':
      schemaKeys(def.in, prefix, out, depth + 1);
      break;
    default:
      if (def.innerType) schemaKeys(def.innerType, prefix, out, depth + 1);
  }
  return out;
}

test('the example config loads with the real schema', () => {
  const text = readFileSync(exampleFile, 'utf8');
  // Its secret files live in /etc/smarthost on a real machine: point them at a temp file.
  const dir = makeTempDirSync('smarthost-example');
  const passFile = path.join(dir, 'upstream-pass');
  writeFileSync(passFile, 'not-a-real-password\n');
  const local = text.replaceAll('/etc/smarthost/upstream-pass', passFile);
  assert.notEqual(local, text, 'the example reads the upstream password from a file');
  const config = parseConfigText(local, path.join(dir, 'smarthost.yml'), {});
  assert.equal(config.listen.length, 3);
  assert.deepEqual(
    config.listen.map((l) => l.port),
    [25, 587, 465],
  );
  assert.equal(config.upstreams.length, 1);
  assert.equal(config.upstreams[0]?.pass?.reveal(), 'not-a-real-password');
  assert.equal(config.metrics?.port, 9325);
  assert.equal(config.spool.dir, '/var/lib/smarthost');
  assert.ok(!config.allowlist.some((e) => e.cidr.endsWith('/0')), 'never an open relay');
});

test('every key of the schema is documented in the example', () => {
  const text = readFileSync(exampleFile, 'utf8');
  const keys = schemaKeys(configSchema);
  assert.ok(keys.size > 50, `the schema walk found only ${keys.size} keys`);
  const missing = [...keys].filter((dotted) => {
    const leaf = dotted.split('.').at(-1)!;
    // "key:" at the start of a line, in a list item, after a comment mark, or in a flow map.
    return !new RegExp(`(^|[\\s#{,-])${leaf}:`, 'm').test(text);
  });
  assert.deepEqual(missing, [], 'keys the example does not mention (add them, commented)');
});
