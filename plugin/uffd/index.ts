// Public surface of plugin/uffd (re-exported from plugin/index.ts).
export {};
