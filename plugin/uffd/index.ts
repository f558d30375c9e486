// Public surface of plugin/uffd (re-exported from plugin/index.ts): the
// typed userfaultfd ABI and the native fault engine.
export * from './abi.js';
export * from './engine.js';
