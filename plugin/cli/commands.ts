// Registers every CLI command; each area owns one file under ./commands/.
import type { Command } from 'commander';
import { register as registerImages } from './commands/images.js';
import { register as registerDump } from './commands/dump.js';
import { register as registerRestore } from './commands/restore.js';
import { register as registerLazy } from './commands/lazy.js';
import { register as registerPageServer } from './commands/pageserver.js';
import { register as registerProduct } from './commands/product.js';
import { register as registerRpc } from './commands/rpc.js';

export function registerCommands(program: Command): void {
  registerImages(program); // show, inspect
  registerDump(program); // dump, pre-dump
  registerRestore(program); // restore
  registerLazy(program); // lazy-pages
  registerPageServer(program); // page-server, migrate
  registerProduct(program); // check, stats
  registerRpc(program); // swrk, service (CRIU's RPC)
}
