// The real engine behind the server: plugin/uffd's FaultEngine (it satisfies
// FaultEngineLike structurally), and pidfds for root processes so the engine
// notices their exit.
import { pidfdOpen } from '../inject/memory.js';
import { FaultEngine } from '../uffd/engine.js';
import type { EngineFactory, FaultEngineLike } from './engine.js';

export const realEngineFactory: EngineFactory = (opts) => {
  const engine: FaultEngineLike = FaultEngine.create({
    ...(opts.threads !== undefined ? { threads: opts.threads } : {}),
    ...(opts.faultAroundPages !== undefined ? { faultAroundPages: opts.faultAroundPages } : {}),
    onEvents: (evs) => opts.onEvents(evs),
  });
  return engine;
};

/** A pidfd for `pid`, or undefined when it cannot be opened (gone, or another namespace). */
export function pidfdOpenOrUndefined(pid: number): number | undefined {
  try {
    return pidfdOpen(pid, 0);
  } catch {
    return undefined;
  }
}
