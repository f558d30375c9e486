// Public surface of plugin/dump (re-exported from plugin/index.ts):
// checkpointing a running process tree into CRIU-format images.
export { dump, type DumpHooks, type DumpOptions, type DumpResult, type DumpStats } from './dump.js';
export { fpregsFromXstate, credsFromStatus } from './collect.js';
export { parseSmaps, parseStat, parseStatus, parseLimits, parseFdinfo, parseTimers, type SmapsVma, type ProcStat, type ProcTimer } from './proc.js';
export { preDump, type PreDumpOptions } from './predump.js';
