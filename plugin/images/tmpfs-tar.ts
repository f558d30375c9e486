// CRIU's tmpfs images (tmpfs-dev-<mnt id>.tar.gz.img): a gzipped GNU tar
// of the mount's contents, as CRIU makes them with `tar --create --gzip
// --one-file-system --numeric-owner ... -C MOUNT .` and unpacks them with
// `tar --extract --gzip --numeric-owner --preserve-permissions`. The small
// tmpfs mounts of a container (/dev with its device nodes, masked paths,
// /sys/fs/cgroup's mount points) are packed and unpacked here in-process:
// three processes (tar, sh, gzip) per mount cost more than the whole
// archive. What this writer does not handle (sockets are left out, as tar
// does; a file of 8 GiB or more, ids past 2^21) and what this reader does
// not (sparse and pax members, any other type, a member reached through a
// link or leaving the directory) make the caller run tar itself
// (TarUnsupported), so an archive is never half-understood.
import { closeSync, linkSync, lchownSync, lstatSync, lutimesSync, mkdirSync, openSync, readdirSync, readFileSync, readlinkSync, symlinkSync, chmodSync, utimesSync, writeSync, type Stats } from 'node:fs';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';

/** The archive needs tar itself (an entry kind or size this module does not handle). */
export class TarUnsupported extends Error {}

const BLOCK = 512;
/** GNU tar's default record: 20 blocks; an archive is padded to whole records. */
const RECORD = 20 * BLOCK;
const S_IFMT = 0o170000;
const TYPE_OF: Record<number, string> = { 0o100000: '0', 0o120000: '2', 0o020000: '3', 0o060000: '4', 0o040000: '5', 0o010000: '6' };
const MAX_OCTAL11 = 8 ** 11 - 1;
const MAX_OCTAL7 = 8 ** 7 - 1;

function octal(h: Buffer, off: number, len: number, v: number): void {
  h.write(v.toString(8).padStart(len - 1, '0'), off, len - 1, 'ascii');
  h[off + len - 1] = 0;
}

function header(name: string, type: string, st: { mode: number; uid: number; gid: number; size: number; mtime: number; rdev?: [number, number] }, linkname = ''): Buffer {
  if (st.size > MAX_OCTAL11 || st.uid > MAX_OCTAL7 || st.gid > MAX_OCTAL7) throw new TarUnsupported(`${name}: size or owner too large for a plain header`);
  const h = Buffer.alloc(BLOCK);
  Buffer.from(name, 'utf8').copy(h, 0, 0, 100);
  octal(h, 100, 8, st.mode & 0o7777);
  octal(h, 108, 8, st.uid);
  octal(h, 116, 8, st.gid);
  octal(h, 124, 12, st.size);
  octal(h, 136, 12, st.mtime);
  h.write(type, 156, 1, 'ascii');
  Buffer.from(linkname, 'utf8').copy(h, 157, 0, 100);
  h.write('ustar  \0', 257, 8, 'ascii'); // GNU magic and version
  if (st.rdev) {
    octal(h, 329, 8, st.rdev[0]);
    octal(h, 337, 8, st.rdev[1]);
  }
  h.fill(0x20, 148, 156);
  let sum = 0;
  for (const b of h) sum += b;
  h.write(sum.toString(8).padStart(6, '0'), 148, 6, 'ascii');
  h[154] = 0;
  h[155] = 0x20;
  return h;
}

/** GNU long name/link members ('L', 'K') for strings past the 100-byte fields. */
function longMember(type: 'L' | 'K', value: string): Buffer[] {
  const data = Buffer.from(`${value}\0`, 'utf8');
  return [header('././@LongLink', type, { mode: 0o644, uid: 0, gid: 0, size: data.length, mtime: 0 }), pad(data)];
}

function pad(data: Buffer): Buffer {
  const rest = data.length % BLOCK;
  return rest === 0 ? data : Buffer.concat([data, Buffer.alloc(BLOCK - rest)]);
}

function major(dev: number): number {
  return ((dev >>> 8) & 0xfff) | (Math.floor(dev / 2 ** 32) & ~0xfff);
}
function minor(dev: number): number {
  return (dev & 0xff) | ((dev >>> 12) & ~0xff);
}

/**
 * The gzipped tar of directory `dir` (a mount point), members named
 * "./...", not descending into other file systems (their mount point
 * directories are members, as with tar --one-file-system).
 */
export function packTmpfs(dir: string): Buffer {
  const parts: Buffer[] = [];
  const top = lstatSync(dir);
  const links = new Map<string, string>();
  const add = (path: string, name: string, st: Stats): void => {
    const kind = st.mode & S_IFMT;
    let type = TYPE_OF[kind];
    if (type === undefined) return; // sockets: tar leaves them out
    let linkname = '';
    let data: Buffer | undefined;
    let size = 0;
    if (type === '0' && st.nlink > 1) {
      const key = `${st.dev}:${st.ino}`;
      const first = links.get(key);
      if (first !== undefined) {
        type = '1';
        linkname = first;
      } else {
        links.set(key, name);
      }
    }
    if (type === '0') {
      data = readFileSync(path);
      size = data.length;
    } else if (type === '2') {
      linkname = readlinkSync(path);
    }
    const memberName = type === '5' ? `${name}/` : name;
    if (Buffer.byteLength(memberName) > 100) parts.push(...longMember('L', memberName));
    if (Buffer.byteLength(linkname) > 100) parts.push(...longMember('K', linkname));
    parts.push(header(memberName, type, {
      mode: st.mode, uid: st.uid, gid: st.gid, size, mtime: Math.floor(st.mtimeMs / 1000),
      ...(type === '3' || type === '4' ? { rdev: [major(st.rdev), minor(st.rdev)] as [number, number] } : {}),
    }, linkname));
    if (data && data.length) parts.push(pad(data));
    if (type === '5' && st.dev === top.dev) {
      for (const e of readdirSync(path)) {
        const p = join(path, e);
        add(p, `${name}/${e}`, lstatSync(p));
      }
    }
  };
  // The top directory is "./"; its members "./name".
  parts.push(header('./', '5', { mode: top.mode, uid: top.uid, gid: top.gid, size: 0, mtime: Math.floor(top.mtimeMs / 1000) }));
  for (const e of readdirSync(dir)) {
    const p = join(dir, e);
    add(p, `./${e}`, lstatSync(p));
  }
  parts.push(Buffer.alloc(2 * BLOCK));
  let tar = Buffer.concat(parts);
  if (tar.length % RECORD) tar = Buffer.concat([tar, Buffer.alloc(RECORD - (tar.length % RECORD))]);
  return gzipSync(tar);
}

interface Member { name: string; type: string; mode: number; uid: number; gid: number; mtime: number; linkname: string; major: number; minor: number; data: Buffer }

function field(h: Buffer, off: number, len: number): string {
  const end = h.indexOf(0, off);
  return h.toString('utf8', off, end < 0 || end > off + len ? off + len : end);
}

function num(h: Buffer, off: number, len: number): number {
  if (h[off]! & 0x80) throw new TarUnsupported('base-256 number');
  const s = field(h, off, len).trim();
  return s === '' ? 0 : parseInt(s, 8);
}

function members(tar: Buffer): Member[] {
  const out: Member[] = [];
  let longName: string | undefined;
  let longLink: string | undefined;
  for (let off = 0; off + BLOCK <= tar.length;) {
    const h = tar.subarray(off, off + BLOCK);
    if (h.every((b) => b === 0)) break;
    let sum = 0;
    for (let i = 0; i < BLOCK; i++) sum += i >= 148 && i < 156 ? 0x20 : h[i]!;
    if (sum !== num(h, 148, 8)) throw new TarUnsupported(`bad header checksum at offset ${off}`);
    const type = String.fromCharCode(h[156]! || 0x30);
    const size = num(h, 124, 12);
    const data = tar.subarray(off + BLOCK, off + BLOCK + size);
    if (data.length !== size) throw new TarUnsupported('truncated member');
    off += BLOCK + Math.ceil(size / BLOCK) * BLOCK;
    if (type === 'L' || type === 'K') {
      const v = data.toString('utf8').replace(/\0.*$/s, '');
      if (type === 'L') longName = v;
      else longLink = v;
      continue;
    }
    const prefix = field(h, 345, 155);
    const name = longName ?? (prefix && field(h, 257, 6) === 'ustar' ? `${prefix}/${field(h, 0, 100)}` : field(h, 0, 100));
    out.push({
      name, type, mode: num(h, 100, 8), uid: num(h, 108, 8), gid: num(h, 116, 8), mtime: num(h, 136, 12),
      linkname: longLink ?? field(h, 157, 100), major: num(h, 329, 8), minor: num(h, 337, 8), data,
    });
    longName = undefined;
    longLink = undefined;
  }
  return out;
}

/** A member's path relative to the top ("" for the top itself); undefined when it is not a plain relative path. */
function relPath(name: string): string | undefined {
  const parts = name.split('/').filter((p) => p !== '' && p !== '.');
  if (name.startsWith('/') || parts.some((p) => p === '..')) return undefined;
  return parts.join('/');
}

/**
 * Unpacks a gzipped tar into `dest` (an empty, freshly mounted tmpfs) as
 * tar --extract --numeric-owner --preserve-permissions does: owners, modes
 * and modification times kept, directories' times set last. `mknod` makes
 * device nodes and FIFOs. Throws TarUnsupported before touching anything
 * when a member is of a kind handled only by tar itself.
 */
export function unpackTmpfs(gz: Buffer, dest: string, mknod: (path: string, mode: number, major: number, minor: number) => void): void {
  const list = members(gunzipSync(gz));
  // Check everything first: a member whose parent is not a directory of the
  // archive (a symlink would lead out of dest) or any unknown kind -> tar.
  const dirs = new Set<string>(['']);
  const plan: { m: Member; rel: string }[] = [];
  for (const m of list) {
    const rel = relPath(m.name);
    if (rel === undefined) throw new TarUnsupported(`member ${m.name} is not a relative path`);
    if (!'0123456'.includes(m.type)) throw new TarUnsupported(`member ${m.name} of type ${m.type}`);
    const parent = rel.includes('/') ? rel.slice(0, rel.lastIndexOf('/')) : '';
    if (rel !== '' && !dirs.has(parent)) throw new TarUnsupported(`member ${m.name} is not under a directory of the archive`);
    if (m.type === '5') dirs.add(rel);
    else if (rel === '' || dirs.has(rel)) throw new TarUnsupported(`member ${m.name} replaces a directory`);
    if (m.type === '1') {
      const target = relPath(m.linkname);
      if (target === undefined || target === '') throw new TarUnsupported(`hard link ${m.name} to ${m.linkname}`);
    }
    plan.push({ m, rel });
  }
  const dirTimes: { path: string; m: Member }[] = [];
  for (const { m, rel } of plan) {
    const path = rel === '' ? dest : join(dest, rel);
    switch (m.type) {
      case '5':
        if (rel !== '') mkdirSync(path, { mode: 0o700 });
        break;
      case '0': {
        const fd = openSync(path, 'wx', 0o600);
        try {
          for (let off = 0; off < m.data.length;) off += writeSync(fd, m.data, off);
        } finally {
          closeSync(fd);
        }
        break;
      }
      case '1':
        linkSync(join(dest, relPath(m.linkname)!), path);
        continue; // the link shares its target's inode and attributes
      case '2':
        symlinkSync(m.linkname, path);
        break;
      case '3':
        mknod(path, 0o020000 | 0o600, m.major, m.minor);
        break;
      case '4':
        mknod(path, 0o060000 | 0o600, m.major, m.minor);
        break;
      case '6':
        mknod(path, 0o010000 | 0o600, 0, 0);
        break;
    }
    lchownSync(path, m.uid, m.gid);
    if (m.type === '2') {
      lutimesSync(path, m.mtime, m.mtime);
      continue;
    }
    // After chown: chown clears set-user-ID and set-group-ID bits.
    chmodSync(path, m.mode & 0o7777);
    if (m.type === '5') dirTimes.push({ path, m });
    else utimesSync(path, m.mtime, m.mtime);
  }
  for (const { path, m } of dirTimes.reverse()) utimesSync(path, m.mtime, m.mtime);
}
