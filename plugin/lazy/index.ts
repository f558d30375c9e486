// Public surface of plugin/lazy (re-exported from plugin/index.ts).
export { LazyPagesServer } from './server.js';
export type { LazyPagesServerDeps } from './server.js';
export type {
  AdoptOptions, FaultBatchEvent, ForkEvent, LazyErrorEvent, LazyEventMap, LazyPagesServerOptions, PageSource,
  PlannedRange, ProcessEvent, LazyProcessState, LazyProcessStats, RangeEvent, RecordedEvent, RemapEvent, RemotePageSource, LazyServerStats, SocketEvent,
} from './types.js';
export { isLazyVma, planRanges } from './plan.js';
export type { Plan, PagemapRun, VmaInfo } from './plan.js';
export type { LazyImageProvider, RawImageReader } from './images.js';
export { formatSummary } from './summary.js';
export { loadWorkingSet, WorkingSetRecorder, workingSetPath, writeWorkingSet } from './workingset.js';
