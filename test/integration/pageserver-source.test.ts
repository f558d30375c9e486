// The source side of migration: lazy pages served straight from a stopped
// process's memory (no pages file), fetched by the remote page source the
// daemon uses, and the session ended by PS_IOV_CLOSE.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { readdirSync } from 'node:fs';
import { startLazySource } from '../../plugin/pageserver/lazy-source.js';
import { PageServerPageSource } from '../../plugin/pageserver/remote-source.js';
import { ProcessMemoryPageStore } from '../../plugin/pageserver/store.js';
import { UserError } from '../../plugin/errors.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';

// A process holding 16 pages of known contents in an anonymous mapping,
// which prints the mapping's address and then waits.
const PY = `
import mmap, ctypes, sys
m = mmap.mmap(-1, 16 * 4096)
m.write(bytes((i * 7 + (i >> 12) * 13) & 255 for i in range(16 * 4096)))
print(hex(ctypes.addressof(ctypes.c_char.from_buffer(m))), flush=True)
sys.stdin.read()
`;

function expected(fromPage: number, pages: number): Buffer {
  const b = Buffer.alloc(pages * 4096);
  for (let j = 0; j < b.length; j++) {
    const i = fromPage * 4096 + j;
    b[j] = (i * 7 + (i >> 12) * 13) & 255;
  }
  return b;
}

test('lazy source serves a stopped process\'s memory; CLOSE ends it', { skip: !isRoot && 'needs root for /proc/PID/mem' }, async () => {
  const fds = openFds();
  const d = tempDir();
  const child = spawn('/usr/bin/python3', ['-c', PY], { stdio: ['pipe', 'pipe', 'inherit'] });
  try {
    child.stdout.setEncoding('utf8');
    const [line] = (await withTimeout(once(child.stdout, 'data'), 10_000, 'workload address')) as [string];
    const base = BigInt(line.trim());
    process.kill(child.pid!, 'SIGSTOP');
    const pid = child.pid!;
    const src = await startLazySource({
      imagesDir: d.path,
      address: '127.0.0.1',
      port: 0,
      ranges: [
        { pid, vaddr: base, nrPages: 4n },
        { pid, vaddr: base + 4n * 4096n, nrPages: 4n }, // adjacent: one run
        { pid, vaddr: base + 12n * 4096n, nrPages: 4n },
      ],
    });
    assert.equal(src.store.totalPages, 12n);
    const remote = await PageServerPageSource.connect({ address: '127.0.0.1', port: src.server.port });
    assert.ok((await remote.fetch(pid, base + 4096n, 6 * 4096)).equals(expected(1, 6)));
    assert.ok((await remote.fetch(pid, base + 12n * 4096n, 4 * 4096, { urgent: false })).equals(expected(12, 4)));
    assert.equal(remote.urgentFetches, 1);
    assert.equal(remote.backgroundBytes, 4 * 4096);
    await remote.close();
    const stats = await withTimeout(src.done, 5000, 'source done');
    assert.equal(stats.pagesServed, 10n);
    assert.deepEqual(readdirSync(d.path), [], 'nothing written to the source disk');
  } finally {
    child.kill('SIGKILL');
    await once(child, 'exit');
    d.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('ProcessMemoryPageStore names the pid and errno for a missing process', () => {
  assert.throws(() => new ProcessMemoryPageStore([{ pid: 0x3fffff0, vaddr: 0x1000n, nrPages: 1n }]),
    (e: unknown) => e instanceof UserError && /^pid 67108848: open \/proc\/67108848\/mem: ENOENT/.test(e.message));
});
