// Public surface of plugin/dump (re-exported from plugin/index.ts).
export {};
