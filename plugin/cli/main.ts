// CLI entry: builds the commander program, loads each command lazily, and
// maps errors to exit codes in one place.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import { Command, CommanderError } from 'commander';
import { ExitCode, UserError } from '../errors.js';
import { registerCommands } from './commands.js';
import { extractGlobalOptions, globalOptions, resolveLogFile } from './global.js';
import { configureLog, log, logFileConfigured } from '../log.js';
import { mark } from '../phases.js';

mark('cli loaded');

export async function main(argv: string[]): Promise<number> {
  const version = await packageVersion();
  const program = new Command();
  program
    .name('lazy-restore')
    .description('Checkpoint/restore of Linux process trees with lazy restore over userfaultfd (CRIU image format)')
    .version(version, '-V, --version')
    .option('--verbose', 'print stack traces and debug logs')
    .exitOverride()
    .showHelpAfterError();
  registerCommands(program);
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
    log.debug(`Version: ${version} (lazy-restore), command: ${action.name()} ${argv.join(' ')}`);
  });
  try {
    const rest = extractGlobalOptions(argv);
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
      process.stderr.write(`lazy-restore: ${e.message}\n`);
      // With -o the log must say why the command failed too, as CRIU's does.
      if (logFileConfigured()) log.error(e.message);
      if (verbose && e.stack) process.stderr.write(`${e.stack}\n`);
      return e.exitCode;
    }
    process.stderr.write(`lazy-restore: internal error: ${e instanceof Error ? (e.stack ?? e.message) : String(e)}\n`);
    return ExitCode.internal;
  }
}

async function packageVersion(): Promise<string> {
  const { readFileSync } = await import('node:fs');
  const { projectRoot } = await import('./paths.js');
  const pkg = JSON.parse(readFileSync(`${projectRoot}/package.json`, 'utf8')) as { version: string };
  return pkg.version;
}

/** How long a failed command may take to wind down before it is made to exit. */
const FAILURE_EXIT_MS = 5000;

// No top-level await: the bundle is a CommonJS script (scripts/bundle.sh).
void main(process.argv.slice(2)).then((code) => {
  process.exitCode = code;
  if (code !== ExitCode.ok) {
    // Every command releases what it started before its error reaches here; if
    // anything still holds the event loop (a native thread, a socket), exit
    // anyway, bounded: a failed command never stays running after its error.
    setTimeout(() => {
      // A bug in some command's cleanup: say so (a second line the tests catch), then go.
      process.stderr.write(`lazy-restore: internal: still running ${FAILURE_EXIT_MS / 1000} s after the error (held by ${process.getActiveResourcesInfo().join(', ') || 'native threads'}); exiting\n`);
      process.exit(code);
    }, FAILURE_EXIT_MS).unref();
  }
});
