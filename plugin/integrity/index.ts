// Integrity guards: nothing restored may run on wrong memory.
export { Watchdog } from './watchdog.js';
