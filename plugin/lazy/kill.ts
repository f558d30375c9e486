// SIGKILL with the outcome named: the one way the lazy-pages server kills.
import { errText } from './helpers.js';

/** 'killed', 'gone' (ESRCH) or the errno name that refused the kill (e.g. EPERM). */
export type KillOutcome = 'killed' | 'gone' | string;

/** SIGKILLs `pid` through `kill` (process.kill by default in the server). */
export function killPid(kill: (pid: number) => void, pid: number): KillOutcome {
  try {
    kill(pid);
    return 'killed';
  } catch (e) {
    const code = (e as { code?: unknown }).code;
    if (code === 'ESRCH') return 'gone';
    return typeof code === 'string' ? code : errText(e);
  }
}
