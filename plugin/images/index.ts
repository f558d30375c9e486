// Public surface of plugin/images (re-exported from plugin/index.ts): CRIU
// image framing, protobuf codec, typed messages, streaming pagemaps, the
// image directory and crit-compatible JSON.
export * from './types.js';
export * from './memory.js';
export * from './magic.js';
export { PROTO_DIR, decodeMessage, encodeMessage, messagePlan, type FieldPlan, type MessagePlan, type PlainMessage, type Where } from './codec.js';
export { ChunkedReader, headerBytes, joinEntries, parseHeader, scanVarintFields, splitEntries, type ImageHeader, type RawEntry } from './framing.js';
export { decodeImage, encodeImage, entryType, readImageFile, writeImageFile, type DecodedEntry, type DecodedImage, type EntryToWrite } from './image.js';
export {
  PagemapIndex, PagemapReader, PagemapWriter, PagesFileWriter, decodePagemapEntry, encodePagemapEntry, encodePagemapHead, entryFlags, entryPages,
  formatPeFlags, type PagemapReaderOptions, type PagemapRecord, type PagemapWriterOptions,
} from './pagemap.js';
export { ImageDir, type ImageFileInfo, type PagePiece } from './imagedir.js';
export {
  base64Lines, critJsonToImage, imageToCrit, imageToCritJson, messageFromCrit, messageToCrit, parseJson, stringifyJson, type JsonValue,
} from './critjson.js';
export {
  formatBytes, formatCheckpointSummary, inspectCheckpoint, isLazyEligible, vmaStatusNames,
  type CheckpointSummary, type FdSummary, type MemoryCounts, type ProcessSummary, type VmaSummary,
} from './inspect.js';
export { DEFAULT_CHECKSUM_CHUNK, checkChecksumsEntry, computePageChecksums, crc32c, firstBadChunk, verifyPageChecksums } from './checksums.js';
export { checkImageSet, type ImageProblem } from './validate.js';
