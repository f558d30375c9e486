// Writes a small but complete and consistent checkpoint (two processes, one
// a zombie; a two-thread leader) from the image samples, with a pagemap
// whose memory figures are known.
import { ImageDir } from '../../plugin/images/imagedir.js';
import { PE_LAZY, PE_PRESENT } from '../../plugin/images/memory.js';
import * as S from './image-samples.js';

const PAGE = 4096;

export async function writeSampleCheckpoint(dir: string): Promise<ImageDir> {
  const d = await ImageDir.create(dir);
  await d.writeInventory(S.inventory());
  await d.writePstree(S.pstree);
  await d.writeCore(4242, S.coreLeader());
  await d.writeCore(4243, S.coreThread());
  await d.writeCore(4250, S.coreZombie);
  await d.writeIds(4242, S.ids);
  await d.writeIds(4250, S.ids);
  await d.writeMm(4242, S.mm());
  await d.writeFs(4242, S.fs);
  await d.writeFiles(S.files());
  await d.writeFdinfo(2, S.fdinfo);
  const w = await d.pagemapWriter(4242, 1);
  await w.add(0x55d0c0de3000n, 1, PE_PRESENT, Buffer.alloc(PAGE, 1)); // file-private data page
  await w.add(0x55d0c1000000n, 4, PE_LAZY | PE_PRESENT, Buffer.alloc(4 * PAGE, 2)); // heap
  await w.add(0x7f0000002000n, 2, PE_LAZY); // anon, left on a page server
  await w.add(0x7ffd00000000n, 2, PE_LAZY | PE_PRESENT, Buffer.alloc(2 * PAGE, 3)); // stack
  await w.add(0x7ffd00100000n, 2, PE_PRESENT, Buffer.alloc(2 * PAGE, 4)); // vdso
  await w.close();
  return d;
}
