// Page checksums end to end with real processes: dump writes
// lr-checksums-<id>.img; a byte flipped in a pages file is caught by eager
// restore (nothing runs) and by the lazy daemon (the process is killed the
// first time it touches the bad chunk, never runs on it), also when the
// restorer writes the pages on 2 threads; --no-verify shows
// the same image would otherwise run on wrong memory.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { existsSync, openSync, closeSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { ImageDir } from '../../plugin/images/index.js';
import { LazyPagesServer } from '../../plugin/lazy/server.js';
import { WorkingSetRecorder, writeWorkingSet } from '../../plugin/lazy/workingset.js';
import { restore } from '../../plugin/restore/index.js';
import { isRoot, leakedFds, openFds, tempDir, withTimeout } from '../helpers/env.js';
import { dumpDemo, flipDataByte } from '../helpers/integrity.js';

const skip = !isRoot && 'needs root';

const chunkOf = (offset: number): number => offset - (offset % 65536);

function gone(pid: number): boolean {
  try {
    const st = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return /^[ZX]$/.test(st.slice(st.lastIndexOf(')') + 2, st.lastIndexOf(')') + 3));
  } catch {
    return true;
  }
}

test('dump writes a checksums image for every pages file, and it verifies', { skip }, async () => {
  const d = tempDir('lr-integ-');
  try {
    const { images } = await dumpDemo(d.path, 2);
    const pages = readdirSync(images).filter((f) => /^pages-\d+\.img$/.test(f));
    assert.ok(pages.length >= 1);
    const dir = await ImageDir.open(images);
    for (const f of pages) {
      const id = Number(/\d+/.exec(f)![0]);
      assert.ok(existsSync(join(images, `lr-checksums-${id}.img`)), `lr-checksums-${id}.img`);
      assert.equal(await dir.verifyPages(id), true);
      const e = (await dir.checksums(id))!;
      assert.equal(e.chunk_size, 65536);
    }
  } finally {
    d.dispose();
  }
});

test('eager restore, the process copying its pages itself (LR_EAGER_IN_TASK=1): a flipped byte is caught before anything runs (file, offset, pid named)', { skip }, async () => {
  const fds = openFds();
  const d = tempDir('lr-integ-');
  const saved = process.env.LR_EAGER_IN_TASK;
  process.env.LR_EAGER_IN_TASK = '1';
  try {
    const { pid, images, ctl } = await dumpDemo(d.path, 2);
    const { file, offset } = await flipDataByte(images, pid);
    await assert.rejects(restore({ imagesDir: images, detached: true }), (e: Error) => {
      assert.equal(e.name, 'ImageError');
      assert.ok(e.message.includes(`${file} at offset ${chunkOf(offset)}`), e.message);
      assert.match(e.message, new RegExp(`pid ${pid}: CRC32C mismatch`));
      return true;
    });
    assert.ok(gone(pid), 'no restored process left');
    assert.equal(existsSync(join(ctl, 'result')), false);

    // --no-verify: the same images restore and the program runs on the wrong byte.
    const tree = await restore({ imagesDir: images, detached: true, verify: false });
    writeFileSafe(join(ctl, 'go'));
    const exit = await withTimeout(tree.wait(), 20_000, 'unverified restore exit');
    await tree.close();
    assert.equal(exit.code, 1);
    assert.match(readFileSync(join(ctl, 'result'), 'utf8'), /^fail 1 wrong words/);
  } finally {
    if (saved === undefined) delete process.env.LR_EAGER_IN_TASK;
    else process.env.LR_EAGER_IN_TASK = saved;
    d.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('eager restore written by the restorer on 2 threads (LR_EAGER_IN_TASK=0): intact images verify, a flipped byte is caught before anything runs', { skip }, async () => {
  const fds = openFds();
  const d = tempDir('lr-integ-');
  const saved = { inTask: process.env.LR_EAGER_IN_TASK, threads: process.env.LR_EAGER_THREADS };
  process.env.LR_EAGER_IN_TASK = '0';
  process.env.LR_EAGER_THREADS = '2';
  try {
    const { pid, images, ctl } = await dumpDemo(d.path, 4);
    const tree = await restore({ imagesDir: images, detached: true });
    writeFileSafe(join(ctl, 'go'));
    const exit = await withTimeout(tree.wait(), 20_000, 'restored exit');
    await tree.close();
    assert.equal(exit.code, 0, readFileSync(join(ctl, 'result'), 'utf8'));
    rmSync(join(ctl, 'result'), { force: true });

    const { file, offset } = await flipDataByte(images, pid);
    await assert.rejects(restore({ imagesDir: images, detached: true }), (e: Error) => {
      assert.equal(e.name, 'ImageError');
      assert.ok(e.message.includes(`${file} at offset ${chunkOf(offset)}`), e.message);
      assert.match(e.message, new RegExp(`pid ${pid}: CRC32C mismatch`));
      return true;
    });
    assert.ok(gone(pid), 'no restored process left');
    assert.equal(existsSync(join(ctl, 'result')), false);
  } finally {
    for (const [k, v] of [['LR_EAGER_IN_TASK', saved.inTask], ['LR_EAGER_THREADS', saved.threads]] as const) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
    d.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('lazy restore: a flipped byte is caught on first use of its chunk; the process is killed, never runs on it', { skip }, async () => {
  const fds = openFds();
  const d = tempDir('lr-integ-');
  try {
    const { pid, images, ctl } = await dumpDemo(d.path, 4);
    const { file, offset } = await flipDataByte(images, pid);
    const server = await LazyPagesServer.open({ imagesDir: images, prefetch: false });
    const errors: string[] = [];
    server.on('error', (ev) => errors.push(ev.message));
    try {
      const tree = await restore({ imagesDir: images, lazy: true, detached: true, lazyServer: server });
      writeFileSafe(join(ctl, 'go'));
      const exit = await withTimeout(tree.wait(), 20_000, 'restored process killed');
      await withTimeout(tree.lazyDone(), 10_000, 'daemon idle');
      await tree.close();
      assert.equal(exit.signal, 9, `killed by SIGKILL, got ${JSON.stringify(exit)}`);
      assert.equal(existsSync(join(ctl, 'result')), false, 'it never reached its verdict');
      assert.equal(errors.length, 1, errors.join('\n'));
      assert.ok(errors[0]!.includes(`${file} at offset ${chunkOf(offset)}: CRC32C mismatch`), errors[0]);
      assert.match(errors[0]!, new RegExp(`^pid ${pid}: .*EBADMSG.*killed pid ${pid} with SIGKILL`));
      assert.equal(server.stats().killed, 1);
    } finally {
      await server.close();
    }

    // verify: false serves the same chunk as it is.
    const server2 = await LazyPagesServer.open({ imagesDir: images, prefetch: true, verify: false });
    try {
      const tree = await restore({ imagesDir: images, lazy: true, detached: true, lazyServer: server2 });
      writeFileSafe(join(ctl, 'go'));
      const exit = await withTimeout(tree.wait(), 20_000, 'unverified lazy restore exit');
      await tree.lazyDone();
      await tree.close();
      assert.equal(exit.code, 1);
      assert.match(readFileSync(join(ctl, 'result'), 'utf8'), /^fail 1 wrong words/);
    } finally {
      await server2.close();
    }
  } finally {
    d.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('lazy restore with a recorded working set over a flipped byte: its chunks are checked ahead, the bad one still kills the process before it runs', { skip }, async () => {
  const fds = openFds();
  const d = tempDir('lr-integ-');
  try {
    const { pid, images, ctl } = await dumpDemo(d.path, 4);
    const { file, offset } = await flipDataByte(images, pid);
    // A working set of the flipped page and a few good ones around it (its chunk checked
    // ahead does not match: left for the replay, which must refuse it).
    const pm = await (await ImageDir.open(images)).pagemap(pid);
    let bad = 0n;
    for await (const r of pm) {
      if (r.pagesOffset !== undefined && offset >= r.pagesOffset && offset < r.pagesOffset + r.nrPages * 4096) bad = r.vaddr + BigInt(Math.floor((offset - r.pagesOffset) / 4096) * 4096);
    }
    await pm.close();
    assert.ok(bad > 0n, 'the flipped page in the pagemap');
    const rec = new WorkingSetRecorder(0n);
    for (const a of [bad - 0x40000n, bad - 0x20000n, bad, bad + 0x20000n]) rec.add(a, 1n);
    await writeWorkingSet(images, pid, 0n, rec);
    const server = await LazyPagesServer.open({ imagesDir: images, prefetch: false, workingSetHoldMs: 20_000 });
    const errors: string[] = [];
    server.on('error', (ev) => errors.push(ev.message));
    try {
      const tree = await restore({ imagesDir: images, lazy: true, detached: true, lazyServer: server });
      writeFileSafe(join(ctl, 'go'));
      const exit = await withTimeout(tree.wait(), 20_000, 'restored process killed');
      await withTimeout(tree.lazyDone(), 10_000, 'daemon idle');
      await tree.close();
      assert.equal(exit.signal, 9, `killed by SIGKILL, got ${JSON.stringify(exit)}`);
      assert.equal(existsSync(join(ctl, 'result')), false, 'it never reached its verdict');
      assert.equal(errors.length, 1, errors.join('\n'));
      assert.ok(errors[0]!.includes(`${file} at offset ${chunkOf(offset)}: CRC32C mismatch`), errors[0]);
    } finally {
      await server.close();
    }
  } finally {
    d.dispose();
  }
  assert.deepEqual(leakedFds(fds), []);
});

test('lazy restore of intact images with checksums: the workload verifies all of its memory', { skip }, async () => {
  const d = tempDir('lr-integ-');
  try {
    const { images, ctl } = await dumpDemo(d.path, 4);
    const server = await LazyPagesServer.open({ imagesDir: images });
    try {
      const tree = await restore({ imagesDir: images, lazy: true, detached: true, lazyServer: server });
      writeFileSafe(join(ctl, 'go'));
      const exit = await withTimeout(tree.wait(), 20_000, 'restored exit');
      await tree.lazyDone();
      await tree.close();
      assert.equal(exit.code, 0, readFileSync(join(ctl, 'result'), 'utf8'));
      assert.equal(server.stats().killed, 0);
    } finally {
      await server.close();
    }
  } finally {
    d.dispose();
  }
});

function writeFileSafe(path: string): void {
  closeSync(openSync(path, 'w'));
}
