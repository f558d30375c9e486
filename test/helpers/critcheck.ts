// Validates an image directory with Debian's crit (pycriu 3.17): every
// protobuf image must decode, and re-encode without missing required fields
// (what makes CRIU's protobuf-c reject an entry). One python process per
// directory keeps it fast. crit is installed by scripts/setup.sh: its absence
// fails the test (never a skip).
import { execFileSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';

function requireCritSync(): void {
  if (!existsSync('/usr/bin/crit') || !existsSync('/usr/bin/python3')) throw new Error('crit is required for this check (/usr/bin/crit, /usr/bin/python3; scripts/setup.sh installs them)');
}

const SCRIPT = `
import io, sys
import pycriu
bad = 0
for p in sys.argv[1:]:
    try:
        with open(p, 'rb') as f:
            img = pycriu.images.load(f)
        pycriu.images.dump(img, io.BytesIO())
        print('ok %s %d' % (p, len(img['entries'])))
    except Exception as e:
        print('FAIL %s %r' % (p, e))
        bad = 1
sys.exit(bad)
`;

/** Decodes + re-encodes every protobuf image in `dir` with pycriu; returns entry counts by file name. */
export function critCheckDir(dir: string): Map<string, number> {
  requireCritSync();
  // lr-*.img are our own images (own magics, docs/IMAGES.md): CRIU ignores them, crit cannot read them.
  const files = readdirSync(dir).filter((f) => (f.endsWith('.img') && !f.startsWith('pages-') && !f.startsWith('lr-') && !f.endsWith('.tar.gz.img')) || f.startsWith('stats-')).map((f) => join(dir, f));
  let out: string;
  try {
    out = execFileSync('/usr/bin/python3', ['-c', SCRIPT, ...files], { encoding: 'utf8', timeout: 60000 });
  } catch (e) {
    const so = (e as { stdout?: string }).stdout ?? '';
    throw new Error(`crit rejected images in ${dir}:\n${so.split('\n').filter((l) => l.startsWith('FAIL')).join('\n') || String(e)}`);
  }
  const counts = new Map<string, number>();
  for (const line of out.split('\n')) {
    const m = /^ok (\S+) (\d+)$/.exec(line);
    if (m) counts.set(m[1]!.slice(dir.length + 1), Number(m[2]));
  }
  return counts;
}

/** `crit decode -i FILE` as JSON (for spot checks of what crit itself shows). */
export function critDecode(file: string): { magic: string; entries: Record<string, unknown>[] } {
  requireCritSync();
  return JSON.parse(execFileSync('/usr/bin/crit', ['decode', '-i', file], { encoding: 'utf8', timeout: 30000 })) as { magic: string; entries: Record<string, unknown>[] };
}
