// Image library throughput: streaming pagemap read/write (hand-coded entry
// codec) against protobufjs decoding of the same entries, and CRC32C.
import { readFile } from 'node:fs/promises';
import { decodeMessage } from '../../plugin/images/codec.js';
import { crc32c } from '../../plugin/images/checksums.js';
import { splitEntries } from '../../plugin/images/framing.js';
import { ImageDir } from '../../plugin/images/imagedir.js';
import { PE_LAZY, PE_PRESENT } from '../../plugin/images/memory.js';
import { median, type BenchFigure, type BenchSuite } from '../types.js';

export const suite: BenchSuite = {
  name: 'images',
  async run(ctx): Promise<BenchFigure[]> {
    const n = ctx.quick ? 50_000 : 1_000_000;
    const reps = ctx.quick ? 1 : 3;
    const d = await ImageDir.create(ctx.tmpDir);
    const page = Buffer.alloc(4096, 1);
    const writes: number[] = [];
    for (let r = 0; r < reps; r++) {
      const t = performance.now();
      const w = await d.pagemapWriter(1, 1);
      for (let i = 0; i < n; i++) {
        const va = 0x7f0000000000n + BigInt(i) * 0x3000n;
        if (i % 64 === 0) await w.add(va, 1, PE_LAZY | PE_PRESENT, page);
        else await w.add(va, 2, PE_LAZY);
      }
      await w.close();
      writes.push(n / ((performance.now() - t) / 1000));
    }
    const reads: number[] = [];
    for (let r = 0; r < reps; r++) {
      const t = performance.now();
      let c = 0;
      for await (const b of (await d.pagemap(1)).batches()) c += b.length;
      if (c !== n) throw new Error(`read ${c} entries, wrote ${n}`);
      reads.push(n / ((performance.now() - t) / 1000));
    }
    const generic: number[] = [];
    const file = d.pathOf((await import('../../plugin/images/magic.js')).KIND.pagemap, 1);
    for (let r = 0; r < reps; r++) {
      const t = performance.now();
      const { entries } = splitEntries(await readFile(file), file);
      for (let i = 1; i < entries.length; i++) decodeMessage('pagemap_entry', entries[i]!.payload, { file, offset: entries[i]!.offset });
      generic.push(n / ((performance.now() - t) / 1000));
    }
    const buf = Buffer.alloc(ctx.quick ? 8 << 20 : 64 << 20, 0xa5);
    const crcs: number[] = [];
    for (let r = 0; r < reps; r++) {
      const t = performance.now();
      crc32c(buf);
      crcs.push(buf.length / 2 ** 20 / ((performance.now() - t) / 1000));
    }
    ctx.log(`${n} pagemap entries`);
    const read = median(reads) / 1e6;
    const base = median(generic) / 1e6;
    return [
      { name: `pagemap streaming read (${n} entries)`, value: read, unit: 'M entries/s',
        baseline: { name: 'protobufjs decode, whole file in memory', value: base }, target: '>= 1x baseline', met: read >= base },
      { name: `pagemap streaming write (${n} entries)`, value: median(writes) / 1e6, unit: 'M entries/s' },
      { name: 'CRC32C (slicing-by-8, JS)', value: median(crcs), unit: 'MiB/s' },
    ];
  },
};
