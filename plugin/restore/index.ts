// Public surface of plugin/restore (re-exported from plugin/index.ts).
export {};
