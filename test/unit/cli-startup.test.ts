// The CLI's start-up wiring that needs no process: bin/lazy-restore.js keeps
// one code cache per command name, so its list must name every command.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { COMMAND_NAMES } from '../../plugin/cli/commands.js';
import { projectRoot } from '../helpers/cli.js';

test("bin/lazy-restore.js's code cache names are the CLI's commands (and help)", () => {
  const bin = readFileSync(join(projectRoot, 'bin', 'lazy-restore.js'), 'utf8');
  const m = /const COMMANDS = new Set\(\[([^\]]*)\]\)/.exec(bin);
  assert.ok(m, 'COMMANDS set in bin/lazy-restore.js');
  const names = [...m[1]!.matchAll(/'([^']+)'/g)].map((x) => x[1]!).sort();
  assert.deepEqual(names, [...COMMAND_NAMES, 'help'].sort());
});
