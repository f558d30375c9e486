// CLI commands of the RPC area: `swrk FD` (CRIU's RPC worker on an
// inherited SOCK_SEQPACKET socket: what runc, crun, podman and go-criu
// start) and `service` (CRIU's RPC service on a socket path; one worker
// process per connection). The protocol lives in plugin/rpc.
import type { Command } from 'commander';
import { ExitCode, UserError } from '../../errors.js';

export function register(program: Command): void {
  program
    .command('swrk')
    .description('serve CRIU RPC requests (rpc.proto) on the inherited SOCK_SEQPACKET socket FD, as `criu swrk FD` does for runc, crun and podman')
    .argument('<fd>', 'the socket\'s file descriptor number')
    .addHelpText('after', `
Example (runc starts it itself):
  runc --criu /path/to/criu checkpoint ID     # with criu a symlink to bin/lazy-restore.js

Requests: VERSION (answered as CRIU 4.2), CHECK, FEATURE_CHECK, DUMP,
PRE_DUMP, RESTORE, PAGE_SERVER, PAGE_SERVER_CHLD, WAIT_PID, with NOTIFY
round trips for action scripts. Unsupported options are refused by name.`)
    .action(async (fdArg: string) => {
      const fd = Number(fdArg);
      if (!/^\d+$/.test(fdArg) || !Number.isSafeInteger(fd)) throw new UserError(`swrk: bad file descriptor ${fdArg}`, { exitCode: ExitCode.usage });
      const { addon } = await import('../../native/addon.js');
      const { RpcChannel } = await import('../../rpc/channel.js');
      const { serveConnection } = await import('../../rpc/service.js');
      const { projectRoot } = await import('../paths.js');
      const { join } = await import('node:path');
      // Inherited without CLOEXEC: it must not leak into the processes we start (and restore).
      try {
        addon.setCloexec(fd, true);
      } catch (e) {
        throw new UserError(`swrk: fd ${fd}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
      }
      const ch = new RpcChannel(fd);
      const code = await serveConnection(ch, { cliPath: join(projectRoot, 'bin', 'lazy-restore.js'), standalone: process.env['LR_RPC_STANDALONE'] === '1' });
      ch.close();
      process.exit(code);
    });

  program
    .command('service')
    .description('CRIU\'s RPC service: listen on a SOCK_SEQPACKET socket and serve each connection in its own worker process')
    .option('--address <path>', 'socket path (relative: in the work dir)', 'criu_service.socket')
    .option('--pidfile <file>', 'write our pid here once listening (relative: in the work dir)')
    .option('-d, --daemon', 'not supported: run it in the background with --status-fd FD')
    .action(async (o: { address: string; pidfile?: string; daemon?: boolean }) => {
      const { refuseDaemon, resolveInWorkDir, writePidfile, signalReady } = await import('../global.js');
      refuseDaemon(o, 'service');
      const { addon } = await import('../../native/addon.js');
      const { projectRoot } = await import('../paths.js');
      const { join } = await import('node:path');
      const { spawn } = await import('node:child_process');
      const { rmSync } = await import('node:fs');
      const path = resolveInWorkDir(o.address, undefined);
      let lfd: number;
      try {
        lfd = addon.seqpacketListen(path);
      } catch (e) {
        throw new UserError(`service: cannot listen on ${path}: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
      }
      const stop = (): void => {
        rmSync(path, { force: true });
        process.exit(0);
      };
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
      if (o.pidfile !== undefined) writePidfile(resolveInWorkDir(o.pidfile, undefined), process.pid);
      process.stdout.write(`service: listening on ${path}\n`);
      signalReady();
      const cli = join(projectRoot, 'bin', 'lazy-restore.js');
      for (;;) {
        const conn = await addon.seqpacketAccept(lfd, -1);
        const worker = spawn(process.execPath, [cli, 'swrk', '3'], {
          stdio: ['ignore', 'inherit', 'inherit', conn], env: { ...process.env, LR_RPC_STANDALONE: '1' },
        });
        worker.on('error', () => {});
        addon.restoreCloseFd(conn);
      }
    });
}
