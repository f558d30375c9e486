// The CLI's own lines on stdout and stderr, written straight to fd 1 and 2.
// Touching process.stdout or process.stderr makes node build a stream for
// it (with node's whole streams machinery, and net for a pipe): ~2-4 ms of
// CPU at a command's start or end for one line. Writes to a terminal, file
// or pipe are synchronous in node on Linux either way, so the order of lines
// is the same. A full non-blocking pipe (EAGAIN) gets the rest through the
// stream, which waits for it; a reader that went away (EPIPE) loses the
// line, as it would have with the stream (without node's unhandled 'error').
import { writeSync } from 'node:fs';

/** Set once an fd's stream took over (EAGAIN): later lines queue behind it. */
const viaStream = { 1: false, 2: false };

/** The fd's node stream: built only when a write must go through it (EAGAIN). */
function streamOf(fd: 1 | 2): NodeJS.WriteStream {
  return fd === 1 ? process.stdout : process.stderr;
}

function writeFd(fd: 1 | 2, text: string): void {
  if (viaStream[fd]) {
    streamOf(fd).write(text);
    return;
  }
  let buf = Buffer.from(text);
  while (buf.length > 0) {
    try {
      buf = buf.subarray(writeSync(fd, buf));
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'EAGAIN') {
        viaStream[fd] = true;
        streamOf(fd).write(buf);
        return;
      }
      if (code === 'EPIPE' || code === 'EBADF') return;
      throw e;
    }
  }
}

/** Writes `text` to stdout. */
export function printOut(text: string): void {
  writeFd(1, text);
}

/** Writes `text` to stderr. */
export function printErr(text: string): void {
  writeFd(2, text);
}
