#!/usr/bin/env node
// Runs every compiled test file (dist/test/**/*.test.js) with node's built-in test runner.
// Node 20's runner does not expand globs itself, so the files are listed here.
// Usage: npm test [-- filter]   (a filter keeps the files whose path contains it)
// `--reliability` runs the reliability suite (test/reliability, npm run test:reliability) instead,
// one file at a time; the normal run skips that folder.
import { readdirSync, statSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import path from 'node:path';

const root = path.resolve(import.meta.dirname, '..', 'dist', 'test');
const reliability = process.argv.includes('--reliability');
const filters = process.argv.slice(2).filter((a) => !a.startsWith('-'));
const flags = process.argv.slice(2).filter((a) => a.startsWith('-') && a !== '--reliability');

function collect(dir) {
  return readdirSync(dir).flatMap((name) => {
    const file = path.join(dir, name);
    if (statSync(file).isDirectory()) return name === 'reliability' && !reliability ? [] : collect(file);
    return name.endsWith('.test.js') ? [file] : [];
  });
}

const files = collect(reliability ? path.join(root, 'reliability') : root)
  .filter((f) => filters.length === 0 || filters.some((x) => f.includes(x)))
  .sort();
if (files.length === 0) {
  console.error('no test files found under dist/test (did the build run?)');
  process.exit(1);
}
const result = spawnSync(
  process.execPath,
  ['--test', `--test-concurrency=${reliability ? 1 : 2}`, ...flags, ...files],
  {
    stdio: 'inherit',
  },
);
process.exit(result.status ?? 1);
