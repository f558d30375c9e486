// Python TCP servers for the tests that dump and restore an established
// connection (run as `python3 -u -c SCRIPT`).

/**
 * Python lines: block SIGUSR1 (waited for with sigwait), listen on `host` (a
 * Python expression) on a free port, print "port N", accept one connection
 * as `c` and close the listener.
 */
export function pyAcceptOne(host: string): string {
  return `signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGUSR1])
ls = socket.socket()
ls.bind((${host}, 0))
ls.listen(1)
print('port', ls.getsockname()[1], flush=True)
c, _ = ls.accept()
ls.close()
`;
}

/**
 * Accepts one connection on `host` (a Python expression); reads "hello\n";
 * fills the connection's send queue without blocking (the client does not
 * read); prints "sent N"; waits for SIGUSR1; then reads two more lines and
 * answers "got:<line>" for each. `noDelay` sets TCP_NODELAY on the
 * connection first.
 */
export function pyQueueingPeer(host: string, opts: { noDelay?: boolean } = {}): string {
  return `
import signal, socket, sys
${pyAcceptOne(host)}${opts.noDelay ? 'c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)\n' : ''}f = c.makefile('rb')
assert f.readline() == b'hello\\n'
pattern = bytes(i % 251 for i in range(1 << 16))
c.setblocking(False)
sent = 0
while True:
    try:
        off = sent % 251
        sent += c.send(pattern[off:off + 60000])
    except BlockingIOError:
        break
c.setblocking(True)
print('sent', sent, flush=True)
signal.sigwait([signal.SIGUSR1])
line = f.readline()
line2 = f.readline()
c.sendall(b'got:' + line + b'got:' + line2)
c.close()
`;
}
