// CRIU 4.2 options that lazy-restore accepts for compatibility with scripts
// and test suites written for `criu` (zdtm.py passes several to every run,
// and test .desc files add more). Each is parsed with CRIU's syntax and
// either keeps CRIU's meaning or is a no-op because it only tunes how CRIU
// itself works (the table below says which). The parsed values are kept in
// one typed record (`criuOptions()`) for the modules that honour them.
// Options whose meaning we cannot honour are not here: global.ts names them
// in a usage error.
import { ExitCode, UserError } from '../errors.js';
import type { CgroupMode } from '../cgroup/hierarchy.js';

export interface CriuCompatOptions {
  /** --tcp-established: established TCP connections may be dumped (plugin/dump decides whether it can). */
  tcpEstablished: boolean;
  /** --ext-unix-sk (-x): unix sockets whose peer is outside the tree may be dumped and restored (plugin/dump/fds/unix.ts). */
  extUnixSk: boolean;
  /** --tcp-close: restore established connections closed. */
  tcpClose: boolean;
  /** --skip-in-flight: connections not yet accept()ed are left out. */
  skipInFlight: boolean;
  /** --file-locks: file locks held by the tree may be dumped. */
  fileLocks: boolean;
  /** --link-remap: a file open or mapped under a deleted name but still linked elsewhere is dumped with a link-remap name (plugin/dump/link-remap.ts). */
  linkRemap: boolean;
  /** --evasive-devices: another path to a device file may be used; we always use the recorded one (no-op). */
  evasiveDevices: boolean;
  /** --auto-dedup: CRIU punches the pages a child image overrides out of its parent; ours keep them (no-op). */
  autoDedup: boolean;
  /** --ghost-limit SIZE (bytes): largest deleted-but-open file a dump carries. CRIU's default is 1 MiB. */
  ghostLimit: bigint;
  /** --ghost-fiemap / --no-ghost-fiemap: how CRIU finds the data of a sparse ghost file (FIEMAP or SEEK_DATA); ours always uses SEEK_DATA/SEEK_HOLE (no-op). */
  ghostFiemap: boolean | undefined;
  /** --manage-cgroups[=MODE]: none, props, soft (default), full, strict or ignore (plugin/restore/cgroups.ts). */
  manageCgroups: CgroupMode | undefined;
  /** --cgroup-root [CONTROLLER:]/PATH, in order: restore (and walk, at dump) the cgroups under a new root. */
  cgroupRoots: { ctrl: string | undefined; path: string }[];
  /** --cgroup-dump-controller NAME: dump only these hierarchies (as /proc/PID/cgroup names them). */
  cgroupDumpControllers: string[];
  /** --freeze-cgroup PATH: the freezer cgroup holding the tree (dump: frozen while it is seized). */
  freezeCgroup: string | undefined;
  /** --cgroup-props TEXT, --cgroup-props-file FILE: CRIU's property lists changed (dump; plugin/cgroup/props.ts). */
  cgroupProps: string | undefined;
  cgroupPropsFile: string | undefined;
  /** --cgroup-yard DIR: the hierarchies are mounted in DIR's subdirectories. */
  cgroupYard: string | undefined;
  /** --file-validation filesize|buildid: what tells a restore that a file changed since the dump (CRIU's default: buildid). */
  fileValidation: 'filesize' | 'buildid';
  /** --pre-dump-mode splice|read: how CRIU copies memory at pre-dump; ours always reads it with process_vm_readv (no-op). */
  preDumpMode: 'splice' | 'read' | undefined;
  /** --cpu-cap[=CAPS]: which CPU features CRIU compares with the image (no-op: we restore on the machine type we dumped on). */
  cpuCap: string | undefined;
  /** --ext-mount-map KEY:VALUE or auto: external mounts; the tree shares our mount namespace, so there are none (no-op). */
  extMountMap: string[];
  /** --empty-ns net: dump does not dump the network namespace; the tree shares ours, so nothing is dumped anyway. */
  emptyNs: string[];
}

export const CRIU_GHOST_LIMIT_DEFAULT = 1n << 20n;

function defaults(): CriuCompatOptions {
  return {
    tcpEstablished: false, extUnixSk: false, tcpClose: false, skipInFlight: false, fileLocks: false, linkRemap: false,
    evasiveDevices: false, autoDedup: false, ghostLimit: CRIU_GHOST_LIMIT_DEFAULT, ghostFiemap: undefined, manageCgroups: undefined, cgroupRoots: [], cgroupDumpControllers: [], freezeCgroup: undefined, cgroupProps: undefined, cgroupPropsFile: undefined, cgroupYard: undefined,
    preDumpMode: undefined, cpuCap: undefined, extMountMap: [], emptyNs: [], fileValidation: 'buildid',
  };
}

let current: CriuCompatOptions = defaults();

export function criuOptions(): Readonly<CriuCompatOptions> {
  return current;
}

/** Back to CRIU's defaults (tests; each CLI run parses once). */
export function resetCriuOptions(): void {
  current = defaults();
}

type Arg = 'none' | 'required' | 'optional';

interface CompatOption {
  /** getopt's has_arg: an optional argument only comes as --opt=VALUE. */
  arg: Arg;
  /** CRIU's BOOL_OPT: --no-NAME exists too and sets it back. */
  bool?: boolean;
  apply(o: CriuCompatOptions, value: string | undefined, negated: boolean): void;
}

function usage(msg: string): UserError {
  return new UserError(msg, { exitCode: ExitCode.usage });
}

/** CRIU's parse_size: a decimal count with an optional K, M or G. */
export function parseCriuSize(name: string, v: string): bigint {
  const m = /^(\d+)([KMG]?)$/.exec(v);
  if (!m) throw usage(`${name}: bad size "${v}" (a number with an optional K, M or G)`);
  const mult = m[2] === 'K' ? 1n << 10n : m[2] === 'M' ? 1n << 20n : m[2] === 'G' ? 1n << 30n : 1n;
  return BigInt(m[1]!) * mult;
}

const CGROUP_MODES = new Set(['none', 'props', 'soft', 'full', 'strict', 'ignore']);

const table: Record<string, CompatOption> = {
  '--tcp-established': { arg: 'none', bool: true, apply: (o, _v, n) => { o.tcpEstablished = !n; } },
  '--ext-unix-sk': { arg: 'none', bool: true, apply: (o, _v, n) => { o.extUnixSk = !n; } },
  '--tcp-close': { arg: 'none', bool: true, apply: (o, _v, n) => { o.tcpClose = !n; } },
  '--skip-in-flight': { arg: 'none', bool: true, apply: (o, _v, n) => { o.skipInFlight = !n; } },
  '--file-locks': { arg: 'none', bool: true, apply: (o, _v, n) => { o.fileLocks = !n; } },
  '--link-remap': { arg: 'none', bool: true, apply: (o, _v, n) => { o.linkRemap = !n; } },
  '--evasive-devices': { arg: 'none', bool: true, apply: (o, _v, n) => { o.evasiveDevices = !n; } },
  '--auto-dedup': { arg: 'none', bool: true, apply: (o, _v, n) => { o.autoDedup = !n; } },
  '--ghost-fiemap': { arg: 'none', bool: true, apply: (o, _v, n) => { o.ghostFiemap = !n; } },
  '--ghost-limit': { arg: 'required', apply: (o, v) => { o.ghostLimit = parseCriuSize('--ghost-limit', v!); } },
  '--manage-cgroups': {
    arg: 'optional',
    apply: (o, v) => {
      // CRIU: a bare --manage-cgroups means soft.
      const mode = v ?? 'soft';
      if (!CGROUP_MODES.has(mode)) throw usage(`--manage-cgroups: unknown cgroups mode "${mode}" (none, props, soft, full, strict, ignore)`);
      o.manageCgroups = mode as CgroupMode;
    },
  },
  '--cgroup-root': {
    arg: 'required',
    apply: (o, v) => {
      // CRIU: everything before the first ':' names the hierarchy ("" = cgroup v2), without one it is for all.
      const at = v!.indexOf(':');
      const ctrl = at < 0 ? undefined : v!.slice(0, at);
      const path = at < 0 ? v! : v!.slice(at + 1);
      if (!path.startsWith('/')) throw usage(`--cgroup-root: "${v}" is not [CONTROLLER:]/PATH`);
      o.cgroupRoots.push({ ctrl, path });
    },
  },
  '--cgroup-dump-controller': { arg: 'required', apply: (o, v) => { o.cgroupDumpControllers.push(v!); } },
  '--freeze-cgroup': { arg: 'required', apply: (o, v) => { o.freezeCgroup = v!; } },
  '--cgroup-props': { arg: 'required', apply: (o, v) => { o.cgroupProps = v!; } },
  '--cgroup-props-file': { arg: 'required', apply: (o, v) => { o.cgroupPropsFile = v!; } },
  '--cgroup-yard': { arg: 'required', apply: (o, v) => { o.cgroupYard = v!; } },
  '--file-validation': {
    arg: 'required',
    apply: (o, v) => {
      if (v !== 'filesize' && v !== 'buildid') throw usage(`--file-validation: "${v}" is neither filesize nor buildid`);
      o.fileValidation = v;
    },
  },
  '--pre-dump-mode': {
    arg: 'required',
    apply: (o, v) => {
      if (v !== 'splice' && v !== 'read') throw usage(`--pre-dump-mode: "${v}" is neither splice nor read`);
      o.preDumpMode = v;
    },
  },
  '--cpu-cap': {
    arg: 'optional',
    apply: (o, v) => {
      // CRIU's syntax: comma-separated fpu, cpu, ins, all, none, each may be negated with ^.
      const caps = v ?? 'fpu';
      if (!/^(\^?(fpu|cpu|ins|all|none))(,\^?(fpu|cpu|ins|all|none))*$/.test(caps)) throw usage(`--cpu-cap: bad capability list "${caps}" (fpu, cpu, ins, all, none; ^ negates)`);
      o.cpuCap = caps;
    },
  },
  '--ext-mount-map': {
    arg: 'required',
    apply: (o, v) => {
      if (v !== 'auto' && !/^[^:]+:.+$/.test(v!)) throw usage(`--ext-mount-map: "${v}" is neither auto nor KEY:VALUE`);
      o.extMountMap.push(v!);
    },
  },
  '--empty-ns': {
    arg: 'required',
    apply: (o, v) => {
      if (v !== 'net') throw usage(`--empty-ns: unsupported empty namespace "${v}" (CRIU knows only net)`);
      o.emptyNs.push(v);
    },
  },
};

/** Short spellings CRIU has for these. */
const shortNames: Record<string, string> = { '-l': '--file-locks', '-M': '--ext-mount-map' };

/**
 * If argv[i] is one of the compat options, applies it and returns how many
 * words it used (1 or 2); 0 when it is not one of ours.
 */
export function takeCriuOption(argv: readonly string[], i: number): number {
  const word = argv[i]!;
  let name: string;
  let inline: string | undefined;
  if (word.startsWith('--') && word.includes('=')) {
    name = word.slice(0, word.indexOf('='));
    inline = word.slice(word.indexOf('=') + 1);
  } else {
    name = shortNames[word] ?? word;
  }
  let negated = false;
  let opt = table[name];
  if (opt === undefined && name.startsWith('--no-')) {
    const pos = table[`--${name.slice(5)}`];
    if (pos?.bool) {
      opt = pos;
      negated = true;
    }
  }
  if (opt === undefined) return 0;
  if (opt.arg === 'none') {
    if (inline !== undefined) throw usage(`option ${name} takes no value`);
    opt.apply(current, undefined, negated);
    return 1;
  }
  if (opt.arg === 'optional') {
    opt.apply(current, inline, false);
    return 1;
  }
  if (inline !== undefined) {
    opt.apply(current, inline, false);
    return 1;
  }
  const v = argv[i + 1];
  if (v === undefined) throw usage(`option ${name} needs a value`);
  opt.apply(current, v, false);
  return 2;
}

/** Options of this module that take their value as the next word (never a command name). */
export const compatValueTaking: readonly string[] = [
  ...Object.entries(table).filter(([, o]) => o.arg === 'required').map(([n]) => n),
  ...Object.entries(shortNames).filter(([, n]) => table[n]!.arg === 'required').map(([s]) => s),
];
