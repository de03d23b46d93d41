#!/usr/bin/env node
// The `smarthost` command. The TypeScript sources are compiled to dist/ by `npm install`
// (the `prepare` script) and by `npm start` / `npm test`.
import '../dist/src/cli/index.js';
