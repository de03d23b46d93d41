#!/usr/bin/env node
// The `smarthost` command. The TypeScript sources are compiled to dist/ by `npm install`
// (the `prepare` script) and by `npm start` / `npm test`.
// Run under the name `sendmail` (a symlink /usr/sbin/sendmail → this file), or as
// `smarthost sendmail`, it is the sendmail-compatible command for scripts: its flags are
// sendmail's (-t, -i, -oi, -f…), which commander would refuse, so it is dispatched here.
import path from 'node:path';

const invokedAs = path.basename(process.argv[1] ?? '');
if (invokedAs === 'sendmail' || process.argv[2] === 'sendmail') {
  const { runSendmail } = await import('../dist/src/cli/sendmail.js');
  process.exitCode = await runSendmail(process.argv.slice(invokedAs === 'sendmail' ? 2 : 3));
} else {
  await import('../dist/src/cli/index.js');
}
