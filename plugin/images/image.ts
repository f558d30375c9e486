// Whole images as typed entries: decode a file (or buffer) into messages
// and encode messages back into an image. Small images only — pagemaps of
// real size go through the streaming PagemapReader.
// Synchronous file I/O: images are small, and each asynchronous call is a
// round trip through libuv's thread pool (two wake-ups on a loaded machine).
import { readFileSync, writeFileSync } from 'node:fs';
import { ImageError } from '../errors.js';
import { decodeMessage, encodeMessage, type PlainMessage } from './codec.js';
import { joinEntries, splitEntries } from './framing.js';
import { type ImageKind } from './magic.js';
import { decodePagemapEntry } from './pagemap.js';

export interface DecodedEntry {
  /** Offset of the entry's size prefix in the file. */
  offset: number;
  /** Protobuf message type of this entry. */
  type: string;
  message: PlainMessage;
  /** Raw bytes that followed the entry (images with EXTRA payloads only). */
  extra?: Buffer;
}

export interface DecodedImage {
  file: string;
  kind: ImageKind;
  entries: DecodedEntry[];
}

/** Message type of entry number `index` of an image of `kind`. */
export function entryType(kind: ImageKind, index: number): string | undefined {
  return index === 0 && kind.headMessage ? kind.headMessage : kind.message;
}

/** Decodes a whole image held in memory; `file` names it in errors. */
export function decodeImage(buf: Buffer, file: string, expected?: ImageKind): DecodedImage {
  const { header, entries } = splitEntries(buf, file, expected);
  const kind = header.kind;
  const out: DecodedEntry[] = [];
  entries.forEach((raw, i) => {
    const type = entryType(kind, i);
    if (!type) throw new ImageError(file, raw.offset, `${kind.name} images are not supported (no schema for their entries)`);
    let message: PlainMessage;
    if (type === 'pagemap_entry') {
      try {
        message = decodePagemapEntry(raw.payload, 0, raw.payload.length) as unknown as PlainMessage;
      } catch (e) {
        throw new ImageError(file, raw.offset, `cannot decode pagemap_entry: ${(e as Error).message}`);
      }
    } else {
      message = decodeMessage(type, raw.payload, { file, offset: raw.offset });
    }
    const d: DecodedEntry = { offset: raw.offset, type, message };
    if (raw.extra) d.extra = raw.extra;
    out.push(d);
  });
  return { file, kind, entries: out };
}

/** Reads and decodes an image file. */
export async function readImageFile(path: string, expected?: ImageKind): Promise<DecodedImage> {
  let buf: Buffer;
  try {
    buf = readFileSync(path);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code ?? String(e);
    throw new ImageError(path, undefined, `cannot read image: ${code}`, { cause: e });
  }
  return decodeImage(buf, path, expected);
}

export interface EntryToWrite {
  message: object;
  extra?: Buffer;
}

/** Encodes messages (head first for pagemap-like kinds) into a complete image. */
export function encodeImage(kind: ImageKind, entries: readonly EntryToWrite[]): Buffer {
  return joinEntries(kind, entries.map((e, i) => {
    const type = entryType(kind, i);
    if (!type) throw new TypeError(`cannot encode ${kind.name} images (no schema)`);
    const payload = encodeMessage(type, e.message);
    return e.extra ? { payload, extra: e.extra } : { payload };
  }));
}

/** Writes an image file of `kind` holding `messages` (no EXTRA payloads). */
export async function writeImageFile(path: string, kind: ImageKind, messages: readonly object[]): Promise<void> {
  writeFileSync(path, encodeImage(kind, messages.map((message) => ({ message }))));
}
