// Public surface of plugin/images (re-exported from plugin/index.ts).
export {};
