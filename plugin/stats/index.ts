// Statistics files (--stats-file) and their timeline plot.
export * from './format.js';
export { plotTimeline, summarize } from './plot.js';
