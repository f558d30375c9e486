// RawImageReader over plugin/images' ImageDir (the CRIU image library).
import type { RawImageReader } from './images.js';

export async function openImageDirReader(dir: string): Promise<RawImageReader> {
  throw new Error(`${dir}: the images library (plugin/images) has not landed yet`);
}
