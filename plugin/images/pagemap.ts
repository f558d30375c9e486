// Pagemaps and pages files (IMAGE-FORMAT §3.10, §4), one module per job:
//   pagemap-codec.ts   pagemap_entry / pagemap_head bytes, effective flags and counts
//   pagemap-reader.ts  streaming, validating reader (PagemapReader, PagemapRecord)
//   pagemap-writer.ts  streaming pagemap + pages file writers
//   pagemap-index.ts   compact sorted table for random lookups
// This module re-exports them so existing imports keep working.
export { decodePagemapEntry, encodePagemapEntry, encodePagemapHead, entryFlags, entryPages, formatPeFlags } from './pagemap-codec.js';
export { PagemapReader, type PagemapReaderOptions, type PagemapRecord } from './pagemap-reader.js';
export { PagemapWriter, PagesFileWriter, type PagemapWriterOptions } from './pagemap-writer.js';
export { PagemapIndex } from './pagemap-index.js';
