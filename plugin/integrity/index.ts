// Integrity guards: nothing restored may run on wrong memory.
export { Watchdog } from './watchdog.js';
export { PageVerifier, checksumsPathFor, loadPageChecksums } from './checksums.js';
