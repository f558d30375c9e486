// timerfd → file_entry.tfd: clock, expirations not yet read (ticks),
// settime flags, remaining time and interval, as fdinfo shows them (the
// remaining time is relative even for TFD_TIMER_ABSTIME timers; restore
// adds the clock's current time back, as CRIU does).
import { FdType, type FownEntry, type TimerfdEntry } from '../../images/index.js';
import type { DumpFdKind } from './types.js';

export interface TimerfdInfo {
  clockid: number;
  ticks: bigint;
  settimeFlags: number;
  value: [bigint, bigint];
  interval: [bigint, bigint];
}

export function parseTimerfdFdinfo(text: string): TimerfdInfo {
  const one = (re: RegExp, what: string): RegExpExecArray => {
    const m = re.exec(text);
    if (!m) throw new Error(`no ${what} in timerfd fdinfo`);
    return m;
  };
  const clock = one(/^clockid:\s*(\d+)\s*$/m, 'clockid');
  const ticks = one(/^ticks:\s*(\d+)\s*$/m, 'ticks');
  const flags = one(/^settime flags:\s*([0-7]+)\s*$/m, 'settime flags');
  const value = one(/^it_value:\s*\((\d+),\s*(\d+)\)\s*$/m, 'it_value');
  const interval = one(/^it_interval:\s*\((\d+),\s*(\d+)\)\s*$/m, 'it_interval');
  return {
    clockid: Number(clock[1]),
    ticks: BigInt(ticks[1]!),
    settimeFlags: parseInt(flags[1]!, 8),
    value: [BigInt(value[1]!), BigInt(value[2]!)],
    interval: [BigInt(interval[1]!), BigInt(interval[2]!)],
  };
}

export function describeTimerfd(id: number, flags: number, fown: FownEntry, fdinfo: string): TimerfdEntry {
  const t = parseTimerfdFdinfo(fdinfo);
  return {
    id, flags, fown, clockid: t.clockid, ticks: t.ticks, settime_flags: t.settimeFlags,
    vsec: t.value[0], vnsec: t.value[1], isec: t.interval[0], insec: t.interval[1],
  };
}

export function timerfdKind(): DumpFdKind<null> {
  return {
    name: 'timerfd',
    claim: (f) => (f.target === 'anon_inode:[timerfd]' ? { data: null } : undefined),
    describe: (_ctx, id, p) => ({ type: FdType.TIMERFD, id, tfd: describeTimerfd(id, p.flags, p.fown, p.fdinfo) }),
  };
}
