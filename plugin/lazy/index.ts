// Public surface of plugin/lazy (re-exported from plugin/index.ts).
export {};
