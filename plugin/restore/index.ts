// Public surface of plugin/restore (re-exported from plugin/index.ts).
export { restore } from './restore.js';
export type { RestoreHooks, RestoreOptions, RestoredTree, RestoreExit, RestoreTimings } from './restore.js';
