// Public surface of plugin/pageserver (re-exported from plugin/index.ts).
export {};
