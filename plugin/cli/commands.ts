// Registers the CLI's commands; each area owns one file under ./commands/.
// Start-up: only the area of the command being run is registered (setting up
// commander's options for every command costs each command ~1-2 ms of CPU);
// help, an unknown command or none at all get every area.
import type { Command } from 'commander';
import { register as registerImages } from './commands/images.js';
import { register as registerDump } from './commands/dump.js';
import { register as registerRestore } from './commands/restore.js';
import { register as registerLazy } from './commands/lazy.js';
import { register as registerPageServer } from './commands/pageserver.js';
import { register as registerProduct } from './commands/product.js';
import { register as registerRpc } from './commands/rpc.js';

/** Each area's registration, in help order, with the commands it registers. */
const AREAS: readonly { commands: readonly string[]; register: (program: Command) => void }[] = [
  { commands: ['show', 'inspect', 'encode'], register: registerImages },
  { commands: ['dump', 'pre-dump'], register: registerDump },
  { commands: ['restore'], register: registerRestore },
  { commands: ['lazy-pages'], register: registerLazy },
  { commands: ['page-server', 'migrate', 'migrate-receive'], register: registerPageServer },
  { commands: ['check', 'stats'], register: registerProduct },
  { commands: ['swrk', 'service'], register: registerRpc }, // CRIU's RPC
];

/** Every command name (bin/lazy-restore.js keeps one code cache per name). */
export const COMMAND_NAMES: readonly string[] = AREAS.flatMap((a) => a.commands);

/**
 * Registers the area of `command` (the first word of the command line after
 * the global options), or every area when it names none of ours.
 */
export function registerCommands(program: Command, command?: string): void {
  const area = AREAS.find((a) => command !== undefined && a.commands.includes(command));
  for (const a of area ? [area] : AREAS) a.register(program);
}
