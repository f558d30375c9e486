// LazyPagesServerOptions: defaults and the checks open() makes.
import { PAGE_SIZE } from '../images/memory.js';
import type { LazyPagesServerOptions } from './types.js';

export const DEFAULT_CHUNK = 2n * 1024n * 1024n;
export const DEFAULT_THREADS = 2;
export const DEFAULT_FAULT_AROUND = 8;
export const DEFAULT_PUSH_IN_FLIGHT = 2;
export const DEFAULT_RECORD_SECONDS = 10;
export const DEFAULT_WS_HOLD_MS = 250;

export function validateOptions(o: LazyPagesServerOptions): void {
  if (typeof o.imagesDir !== 'string' || o.imagesDir === '') throw new TypeError('imagesDir must be a non-empty string');
  if (o.bandwidthBytesPerSec !== undefined && !(o.bandwidthBytesPerSec > 0)) throw new RangeError('bandwidthBytesPerSec must be > 0');
  if (o.engineThreads !== undefined && !(Number.isInteger(o.engineThreads) && o.engineThreads >= 1)) throw new RangeError('engineThreads must be an integer >= 1');
  if (o.pushChunkBytes !== undefined && !(Number.isInteger(o.pushChunkBytes) && o.pushChunkBytes >= PAGE_SIZE && o.pushChunkBytes % PAGE_SIZE === 0)) {
    throw new RangeError('pushChunkBytes must be a multiple of 4096');
  }
  if (o.faultAroundPages !== undefined && !(Number.isInteger(o.faultAroundPages) && o.faultAroundPages >= 1 && o.faultAroundPages <= 512)) throw new RangeError('faultAroundPages must be 1..512');
  if (o.workingSetHoldMs !== undefined && !(Number.isFinite(o.workingSetHoldMs) && o.workingSetHoldMs >= 0)) throw new RangeError('workingSetHoldMs must be >= 0');
  if (typeof o.recordWorkingSet === 'number' && !(Number.isFinite(o.recordWorkingSet) && o.recordWorkingSet > 0)) throw new RangeError('recordWorkingSet must be true or a number of seconds > 0');
  if (o.pushInFlight !== undefined && !(Number.isInteger(o.pushInFlight) && o.pushInFlight >= 1)) throw new RangeError('pushInFlight must be an integer >= 1');
}
