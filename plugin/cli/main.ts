// CLI entry: builds the commander program, loads each command lazily, and
// maps errors to exit codes in one place. Start-up (docs/ARCHITECTURE.md,
// "Command start-up"): only the command being run is set up, and the
// package version is read only when printed or logged.
import { mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { Command, CommanderError } from 'commander';
import { ExitCode, UserError } from '../errors.js';
import { registerCommands } from './commands.js';
import { printErr } from './output.js';
import { projectRoot } from './paths.js';
import { extractGlobalOptions, globalOptions, resolveLogFile } from './global.js';
import { configureLog, log, logFileConfigured, logLevel, LogLevel } from '../log.js';
import { mark } from '../phases.js';

mark('cli loaded');

export async function main(argv: string[]): Promise<number> {
  const program = new Command();
  try {
    const rest = extractGlobalOptions(argv);
    // The root program takes no option values: its first word is the command.
    const command = rest.find((a) => !a.startsWith('-'));
    program
      .name('lazy-restore')
      .description('Checkpoint/restore of Linux process trees with lazy restore over userfaultfd (CRIU image format)')
      // commander prints this string for -V only: read package.json only then.
      .version(rest.includes('-V') || rest.includes('--version') ? packageVersion() : '', '-V, --version')
      .option('--verbose', 'print stack traces and debug logs')
      .exitOverride()
      .showHelpAfterError();
    registerCommands(program, command);
    // -o/--log-file is relative to the work dir, which defaults to the images dir
    // of the command being run: resolve it once commander knows the command.
    program.hook('preAction', (_root, action) => {
      const imagesDir = action.opts<{ imagesDir?: string }>().imagesDir;
      const file = resolveLogFile(imagesDir);
      if (file !== undefined) {
        // dump creates its images dir, which is also the default work dir.
        mkdirSync(dirname(file), { recursive: true });
        configureLog({ file });
      }
      // CRIU's log starts with its version and what it was asked to do.
      if (logLevel() >= LogLevel.debug) log.debug(`Version: ${packageVersion()} (lazy-restore), command: ${action.name()} ${argv.join(' ')}`);
    });
    const g = globalOptions();
    if (g.verbosity !== undefined) configureLog({ level: g.verbosity });
    await program.parseAsync(rest, { from: 'user' });
    mark('command done');
    return ExitCode.ok;
  } catch (e) {
    if (e instanceof CommanderError) {
      return e.exitCode === 0 ? ExitCode.ok : ExitCode.usage;
    }
    const verbose = program.opts<{ verbose?: boolean }>().verbose === true || (globalOptions().verbosity ?? 0) >= 4;
    if (e instanceof UserError) {
      printErr(`lazy-restore: ${e.message}\n`);
      // With -o the log must say why the command failed too, as CRIU's does.
      if (logFileConfigured()) log.error(e.message);
      if (verbose && e.stack) printErr(`${e.stack}\n`);
      return e.exitCode;
    }
    printErr(`lazy-restore: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    return ExitCode.internal;
  }
}

/** The package's version, from package.json. */
function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(`${projectRoot}/package.json`, 'utf8')) as { version: string };
  return pkg.version;
}

/** How long a failed command may take to wind down before it is made to exit. */
const FAILURE_EXIT_MS = 5000;

// No top-level await: the bundle is a CommonJS script (scripts/bundle.sh).
void main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
  if (code === ExitCode.ok) {
    // Done: once nothing holds the event loop any more (a socket, a child, a
    // timer, a native thread's callback), which is when node would begin its
    // exit, exit at once. process.exit still runs the 'exit' listeners (code
    // cache, phases) but skips node's environment teardown (heap, handles,
    // addon cleanup hooks: nothing of ours runs any more by then), ~5-10 ms
    // of wall time per command under load.
    process.once('beforeExit', () => process.exit(code));
  }
  if (code !== ExitCode.ok) {
    // Every command releases what it started before its error reaches here; if
    // anything still holds the event loop (a native thread, a socket), exit
    // anyway, bounded: a failed command never stays running after its error.
    setTimeout(() => {
      // A bug in some command's cleanup: say so (a second line the tests catch), then go.
      printErr(`lazy-restore: internal: still running ${FAILURE_EXIT_MS / 1000} s after the error (held by ${process.getActiveResourcesInfo().join(', ') || 'native threads'}); exiting\n`);
      process.exit(code);
    }, FAILURE_EXIT_MS).unref();
  }
});
