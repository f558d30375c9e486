// CLI commands of the images area: show (decode one image, crit-shaped JSON),
// inspect (summarise a checkpoint directory), encode (crit JSON → image).
// Heavy modules are imported inside the handlers so `--help` stays fast.
import type { Command } from 'commander';
import type { JsonValue } from '../../images/index.js';

interface JsonOpt { json?: boolean }

/** Writes to stdout, waiting for drain so huge outputs stay bounded in memory. */
async function out(text: string): Promise<void> {
  if (!process.stdout.write(text)) {
    await new Promise<void>((resolve) => process.stdout.once('drain', resolve));
  }
}

export function register(program: Command): void {
  program
    .command('show')
    .description('decode one image file; --json prints exactly what `crit decode` prints')
    .argument('<file>', 'image file (core-*.img, pagemap-*.img, lr-workingset-*.img, …)')
    .option('--json', 'crit-compatible JSON (one line)')
    .action(async (file: string, opts: JsonOpt) => {
      await show(file, opts.json === true);
    });

  program
    .command('inspect')
    .description('summarise a checkpoint: process tree, VMAs, dumped/lazy/zero/parent memory, open files')
    .argument('<dir>', 'image directory')
    .option('--json', 'machine-readable JSON')
    .action(async (dir: string, opts: JsonOpt) => {
      const { inspectCheckpoint, formatCheckpointSummary, stringifyJson } = await import('../../images/index.js');
      const s = await inspectCheckpoint(dir);
      await out((opts.json ? stringifyJson(s as unknown as JsonValue) : formatCheckpointSummary(s)) + '\n');
    });

  program
    .command('encode')
    .description('build an image from crit-shaped JSON (as printed by `show --json` or `crit decode`)')
    .argument('<json>', 'JSON file')
    .argument('<image>', 'image file to write')
    .action(async (json: string, output: string) => {
      const { readFile, writeFile } = await import('node:fs/promises');
      const { critJsonToImage } = await import('../../images/index.js');
      const { UserError } = await import('../../errors.js');
      let text: string;
      try {
        text = await readFile(json, 'utf8');
      } catch (e) {
        throw new UserError(`${json}: cannot read: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
      }
      const { bytes } = critJsonToImage(text, json);
      try {
        await writeFile(output, bytes);
      } catch (e) {
        throw new UserError(`${output}: cannot write: ${(e as NodeJS.ErrnoException).code ?? String(e)}`);
      }
    });
}

async function show(file: string, json: boolean): Promise<void> {
  const { basename } = await import('node:path');
  const { readFile } = await import('node:fs/promises');
  const I = await import('../../images/index.js');
  const { ImageError } = await import('../../errors.js');
  const named = I.parseFileName(basename(file));
  if (named?.kind.header === 'raw') {
    throw new ImageError(file, undefined, `${named.kind.name} is a raw image (no header, no entries); nothing to decode`);
  }
  let head: Buffer;
  try {
    const fh = await (await import('node:fs/promises')).open(file, 'r');
    try {
      head = Buffer.alloc(8);
      const { bytesRead } = await fh.read(head, 0, 8, 0);
      head = head.subarray(0, bytesRead);
    } finally {
      await fh.close();
    }
  } catch (e) {
    throw new ImageError(file, undefined, `cannot read image: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
  }
  const { kind } = I.parseHeader(head, file);
  if (kind.message === 'pagemap_entry') {
    // Stream: a pagemap may have millions of entries.
    const r = await I.PagemapReader.open(file, { validate: false });
    if (json) {
      await out(`{"magic": "PAGEMAP", "entries": [${I.stringifyJson(I.messageToCrit(I.messagePlan('pagemap_head'), { ...r.head }))}`);
      const plan = I.messagePlan('pagemap_entry');
      for await (const batch of r.batches()) {
        await out(batch.map((x) => ', ' + I.stringifyJson(I.messageToCrit(plan, { ...x.entry }))).join(''));
      }
      await out(']}\n');
    } else {
      await out(`${file}: PAGEMAP, pages in pages-${r.head.pages_id}.img\n`);
      await out(`${'vaddr'.padStart(18)} ${'pages'.padStart(10)} ${'flags'.padEnd(20)} offset\n`);
      for await (const batch of r.batches()) {
        await out(batch.map((x) => `${('0x' + x.vaddr.toString(16)).padStart(18)} ${String(x.nrPages).padStart(10)} ${I.formatPeFlags(x.flags).padEnd(20)} ${x.pagesOffset === undefined ? '-' : '0x' + x.pagesOffset.toString(16)}\n`).join(''));
      }
    }
    return;
  }
  let buf: Buffer;
  try {
    buf = await readFile(file);
  } catch (e) {
    throw new ImageError(file, undefined, `cannot read image: ${(e as NodeJS.ErrnoException).code ?? String(e)}`, { cause: e });
  }
  const img = I.decodeImage(buf, file);
  if (json) {
    await out(I.imageToCritJson(img) + '\n');
  } else {
    await out(I.stringifyJson(hexify(I.imageToCrit(img)), 2) + '\n');
  }
}

/** For the readable form: large 64-bit values (addresses, masks) in hex. */
function hexify(v: JsonValue): JsonValue {
  const walk = (x: unknown): unknown => {
    if (typeof x === 'bigint') return x >= 0x10000n ? `0x${x.toString(16)}` : x;
    if (Array.isArray(x)) return x.map(walk);
    if (x && typeof x === 'object') return Object.fromEntries(Object.entries(x).map(([k, y]) => [k, walk(y)]));
    return x;
  };
  return walk(v) as JsonValue;
}
