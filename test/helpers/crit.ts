// Runs Debian's crit (pycriu) for interop tests. Single crit CLI calls cost
// ~0.3 s, so most work goes through one python process per batch that uses
// pycriu exactly like `crit decode` / `crit encode` do.
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const CRIT = '/usr/bin/crit';
export const PYTHON = '/usr/bin/python3';

/** Why crit cannot be used here, or undefined when it can. */
export async function critUnavailable(): Promise<string | undefined> {
  if (!existsSync(CRIT)) return `${CRIT} not installed (apt-get install criu)`;
  try {
    await run(PYTHON, ['-c', 'import pycriu.images'], { timeout: 30_000 });
  } catch {
    return `${PYTHON} cannot import pycriu`;
  }
  return undefined;
}

/** Throws when crit cannot be used: setup installs it, so its absence is a failure, not a skip. */
export async function requireCrit(): Promise<void> {
  const why = await critUnavailable();
  if (why !== undefined) throw new Error(`crit is required for this test (scripts/setup.sh installs it): ${why}`);
}

const BATCH_PY = `
import json, sys
from pycriu import images
ops = json.load(open(sys.argv[1]))
res = []
for op in ops:
    try:
        if op['op'] == 'decode':
            with open(op['in'], 'rb') as f:
                img = images.load(f, op.get('pretty', False))
            res.append({'ok': True, 'json': json.dumps(img, indent=4 if op.get('pretty') else None)})
        else:
            with open(op['in']) as f:
                img = json.load(f)
            with open(op['out'], 'wb') as f:
                images.dump(img, f)
            res.append({'ok': True})
    except Exception as e:
        res.append({'ok': False, 'error': '%s: %s' % (type(e).__name__, e)})
json.dump(res, open(sys.argv[2], 'w'))
`;

export type CritOp =
  | { op: 'decode'; in: string; pretty?: boolean }
  | { op: 'encode'; in: string; out: string };

export interface CritResult { ok: boolean; json?: string; error?: string }

/** Runs all ops in one python process; results in op order. */
export async function critBatch(workDir: string, ops: CritOp[]): Promise<CritResult[]> {
  const script = join(workDir, 'critbatch.py');
  const opsFile = join(workDir, 'ops.json');
  const resFile = join(workDir, 'results.json');
  await writeFile(script, BATCH_PY);
  await writeFile(opsFile, JSON.stringify(ops));
  await run(PYTHON, [script, opsFile, resFile], { timeout: 120_000 });
  return JSON.parse(await readFile(resFile, 'utf8')) as CritResult[];
}

/** The real crit CLI (for a few end-to-end checks). */
export async function crit(args: string[]): Promise<string> {
  const { stdout } = await run(CRIT, args, { timeout: 60_000, maxBuffer: 64 << 20 });
  return stdout;
}
