// tmpfs images in-process (plugin/images/tmpfs-tar.ts): what packTmpfs
// writes, GNU tar lists and unpacks to the same tree (modes, owners, times,
// device nodes, FIFOs, symlinks, hard links, names and link targets past
// 100 bytes); what GNU tar writes with CRIU's options, unpackTmpfs unpacks
// to the same tree; members it does not handle (sparse files, a member
// under a symlink, a path leaving the directory) are refused with
// TarUnsupported before anything is written.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, chownSync, linkSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, symlinkSync, utimesSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { packTmpfs, TarUnsupported, unpackTmpfs } from '../../plugin/images/tmpfs-tar.js';
import { tempDir } from '../helpers/env.js';

const LONG = `dir-${'x'.repeat(120)}`;

function mknod(path: string, mode: number, major: number, minor: number): void {
  const kind = (mode & 0o170000) === 0o010000 ? 'p' : (mode & 0o170000) === 0o060000 ? 'b' : 'c';
  execFileSync('mknod', kind === 'p' ? [path, 'p'] : [path, kind, String(major), String(minor)]);
}

/** A small tree like a container's /dev, with the awkward cases. */
function makeTree(dir: string): void {
  mkdirSync(join(dir, 'pts'));
  mkdirSync(join(dir, 'sub', LONG), { recursive: true });
  writeFileSync(join(dir, 'sub', LONG, 'data'), 'hello tmpfs\n');
  writeFileSync(join(dir, 'big'), Buffer.alloc(5000, 7));
  linkSync(join(dir, 'big'), join(dir, 'big-link'));
  symlinkSync('/proc/self/fd', join(dir, 'fd'));
  symlinkSync(`/${'y'.repeat(150)}`, join(dir, 'long-target'));
  mknod(join(dir, 'null'), 0o020000, 1, 3);
  mknod(join(dir, 'blk'), 0o060000, 7, 200);
  mknod(join(dir, 'fifo'), 0o010000, 0, 0);
  chmodSync(join(dir, 'null'), 0o666);
  chmodSync(join(dir, 'pts'), 0o1777);
  chmodSync(join(dir, 'big'), 0o4750);
  chownSync(join(dir, 'sub'), 1234, 5678);
  utimesSync(join(dir, 'sub'), 1_000_000, 1_000_000);
  utimesSync(join(dir, 'big'), 2_000_000, 2_000_000);
}

/** Every entry below dir: type, mode, owner, mtime (s), device, link target, contents, link count. */
function describe(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string): void => {
    const p = join(dir, rel);
    const st = lstatSync(p);
    const extra = st.isSymbolicLink() ? readlinkSync(p) : st.isFile() ? readFileSync(p).toString('base64').slice(0, 40) : '';
    out.set(rel || '.', [st.mode.toString(8), st.uid, st.gid, rel === '' ? '' : Math.floor(st.mtimeMs / 1000), st.isCharacterDevice() || st.isBlockDevice() ? st.rdev : '', st.nlink, extra].join(' '));
    if (st.isDirectory()) for (const e of readdirSync(p)) walk(rel ? `${rel}/${e}` : e);
  };
  walk('');
  return out;
}

test('packTmpfs: GNU tar lists and unpacks the same tree', (t) => {
  const src = tempDir('lr-tar-src-');
  const dst = tempDir('lr-tar-dst-');
  t.after(() => { src.dispose(); dst.dispose(); });
  makeTree(src.path);
  const img = join(dst.path, 'tmpfs.tar.gz');
  writeFileSync(img, packTmpfs(src.path));
  const list = execFileSync('tar', ['--list', '--gzip', '--file', img], { encoding: 'utf8' }).split('\n').filter(Boolean);
  assert.equal(list[0], './');
  assert.ok(list.includes(`./sub/${LONG}/data`), list.join(','));
  const out = join(dst.path, 'out');
  mkdirSync(out);
  execFileSync('tar', ['--extract', '--gzip', '--numeric-owner', '--preserve-permissions', '--file', img, '--directory', out]);
  const want = describe(src.path);
  want.delete('.');
  const got = describe(out);
  got.delete('.');
  assert.deepEqual(got, want);
});

test('unpackTmpfs: a GNU tar made with CRIU\'s options unpacks to the same tree', (t) => {
  const src = tempDir('lr-tar-src-');
  const dst = tempDir('lr-tar-dst-');
  t.after(() => { src.dispose(); dst.dispose(); });
  makeTree(src.path);
  const img = join(dst.path, 'tmpfs.tar.gz');
  execFileSync('tar', ['--create', '--gzip', '--no-unquote', '--no-wildcards', '--one-file-system', '--check-links',
    '--preserve-permissions', '--sparse', '--numeric-owner', '--file', img, '--directory', src.path, '.']);
  const out = join(dst.path, 'out');
  mkdirSync(out);
  unpackTmpfs(readFileSync(img), out, mknod);
  assert.deepEqual(describe(out), describe(src.path));
  // And our own archive, round trip.
  const out2 = join(dst.path, 'out2');
  mkdirSync(out2);
  unpackTmpfs(packTmpfs(src.path), out2, mknod);
  assert.deepEqual(describe(out2), describe(src.path));
});

test('unpackTmpfs: members it does not handle are refused before anything is written', (t) => {
  const src = tempDir('lr-tar-src-');
  const dst = tempDir('lr-tar-dst-');
  t.after(() => { src.dispose(); dst.dispose(); });
  // A sparse file: GNU tar --sparse writes an 'S' member.
  execFileSync('truncate', ['-s', '4M', join(src.path, 'sparse')]);
  writeFileSync(join(src.path, 'plain'), 'x');
  const sparse = join(dst.path, 'sparse.tar.gz');
  execFileSync('tar', ['--create', '--gzip', '--sparse', '--file', sparse, '--directory', src.path, '.']);
  // A member reached through a symlink of the archive.
  const evil = join(dst.path, 'evil');
  mkdirSync(join(evil, 'real'), { recursive: true });
  symlinkSync('/', join(evil, 'link'));
  writeFileSync(join(evil, 'real', 'f'), 'y');
  const through = join(dst.path, 'through.tar.gz');
  execFileSync('tar', ['--create', '--gzip', '--file', through, '--directory', evil, './link', './real/f', '--transform', 's,^./real/f,./link/f,']);
  const dotdot = join(dst.path, 'dotdot.tar.gz');
  execFileSync('tar', ['--create', '--gzip', '--file', dotdot, '--directory', evil, './real/f', '--transform', 's,^./real/f,../f,']);
  for (const img of [sparse, through, dotdot]) {
    const out = join(dst.path, `out-${img.length}-${Math.random().toString(36).slice(2)}`);
    mkdirSync(out);
    assert.throws(() => unpackTmpfs(readFileSync(img), out, mknod), TarUnsupported, img);
    assert.deepEqual(readdirSync(out), [], `${img}: nothing written`);
  }
});
