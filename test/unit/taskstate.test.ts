// Task states other than running: the refusal rules for zombies, the zombie
// core, and how a restored zombie ends (plugin/dump/taskstate.ts,
// plugin/restore/taskstate.ts).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { parseStat } from '../../plugin/dump/proc.js';
import { zombieCore, zombieProblem } from '../../plugin/dump/taskstate.js';
import { zombieExit } from '../../plugin/restore/taskstate.js';

const fields = (state: string, exitCode: number): string => {
  const f = Array.from({ length: 50 }, () => '0');
  f[0] = state;
  f[1] = '10'; // ppid
  f[2] = '10'; // pgid
  f[3] = '10'; // sid
  f[49] = String(exitCode); // field 52
  return `4242 (some name) ${f.join(' ')}`;
};

test('zombieProblem: the root, a process being reaped; a plain zombie is fine', () => {
  assert.match(zombieProblem(4242, parseStat(fields('Z', 0)), true)!, /^pid 4242: the root of the tree is a zombie$/);
  assert.match(zombieProblem(4242, parseStat(fields('X', 0)), false)!, /being reaped \(ESRCH\)/);
  // No /proc/999999999/task: treated as a zombie without threads.
  assert.equal(zombieProblem(999999999, parseStat(fields('Z', 0)), false), undefined);
});

test('zombieCore: TASK_DEAD with the wait status and the name, nothing else', () => {
  const c = zombieCore(parseStat(fields('Z', 3 << 8)));
  assert.deepEqual(c, {
    mtype: 1,
    tc: { task_state: 2, exit_code: 0x300, personality: 0, flags: 0, blk_sigset: 0n, comm: 'some name', sigactions: [] },
  });
});

test('zombieExit: exit codes keep 8 bits, fatal signals stay, others become SIGABRT, the core flag is dropped', () => {
  assert.deepEqual(zombieExit(0), { code: 0 });
  assert.deepEqual(zombieExit(200 << 8), { code: 200 });
  assert.deepEqual(zombieExit(9), { signal: 9 });
  assert.deepEqual(zombieExit(0x80 | 11), { signal: 11 });
  assert.deepEqual(zombieExit(17), { signal: 6 }); // SIGCHLD does not kill
});
