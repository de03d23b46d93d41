// A reader that goes away (`smarthost queue show ID | head`, `smarthost --help | true`) makes
// the next write to stdout fail with EPIPE, which Node raises as an uncaught 'error' event: a
// stack trace for something the user did on purpose. Like other Unix tools, a command then
// stops quietly; the daemon (`start`) keeps relaying, since losing its log reader must never
// stop mail (the log lines it can no longer write are dropped).
import type { Writable } from 'node:stream';

export function quietOnClosedPipes(isDaemon: () => boolean): void {
  for (const stream of [process.stdout, process.stderr] as Writable[]) {
    stream.on('error', (err: NodeJS.ErrnoException) => {
      // After the EPIPE, further writes fail with ERR_STREAM_DESTROYED: the same closed pipe.
      if (err.code !== 'EPIPE' && err.code !== 'ERR_STREAM_DESTROYED') throw err;
      if (isDaemon()) return;
      // Whatever the command was doing is beyond caring about its output: stop at once.
      process.exit(process.exitCode ?? 0);
    });
  }
}
