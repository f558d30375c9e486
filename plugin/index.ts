// Public TypeScript API of lazy-restore: one re-export per area.
export * from './errors.js';
export * from './images/index.js';
export * from './uffd/index.js';
export * from './inject/index.js';
export * from './lazy/index.js';
export * from './dump/index.js';
export * from './restore/index.js';
export * from './pageserver/index.js';
export * from './stats/index.js';
export * from './integrity/index.js';
// Defined by more than one area with the same values; images owns them.
export { PAGE_SIZE, PE_LAZY, PE_PARENT, PE_PRESENT } from './images/index.js';
