// Public surface of plugin/pageserver (re-exported from plugin/index.ts):
// CRIU page-server protocol codec and parsers, server, client, migration.
export * from './protocol.js';
export * from './parser.js';
export * from './transport.js';
export * from './store.js';
export * from './server.js';
export * from './client.js';
export * from './remote-source.js';
export * from './lazy-source.js';
export * from './migrate.js';
