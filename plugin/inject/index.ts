// Public surface of plugin/inject (re-exported from plugin/index.ts).
export {};
