// Public surface of plugin/inject (re-exported from plugin/index.ts):
// ptrace control, bounded waits, register/signal state, single-syscall
// injection and remote memory access, shared by dump and restore.
//
// Usage, from the restore side (all calls synchronous, node main thread):
//
//   import { inject } from '../inject/index.js';   // or the named exports
//   inject.seize(tid, PTRACE_O.EXITKILL);          // attach (no stop yet)
//   inject.interrupt(tid); inject.waitStop(tid);   // -> PTRACE_EVENT_STOP
//   const regs = inject.getRegs(tid);              // bigint fields r15..gs
//   const r = inject.injectSyscall(tid, SYS.mmap, [addr, len, prot, flags, -1, 0],
//                { gadget: tramp, trap: true });     // trampoline "0f 05 cc"
//   // or { gadget: inject.findVdsoGadget(pid) } to single-step the vDSO's 0f 05
//   inject.injectSyscallChecked(...)               // throws {code,errno,syscall} on -errno
//   inject.writeMemoryv(pid, data, ranges)         // process_vm_writev, 1024 iovecs/call
//   new ProcMem(pid, true).write(addr, buf)        // FOLL_FORCE write to r-- pages
//   inject.setXstate(tid, buf); inject.setSigmask(tid, mask); inject.setRegs(tid, regs);
//   inject.detach(tid);
//
// Stops caused by a call must be waited for before the next await: libuv
// reaps statuses of children node spawned when SIGCHLD arrives.
// injectSyscall saves and restores every register and the blocked mask,
// sets orig_rax=-1 (no restart fix-up on our rip) and blocks all signals but
// SIGTRAP while the syscall runs; it returns raw rax as a signed bigint.
export * from './constants.js';
export * from './ptrace.js';
export * from './memory.js';
export * from './scratch.js';

import * as ptrace from './ptrace.js';
import * as memory from './memory.js';
import * as scratch from './scratch.js';
/** Everything above as one namespace object. */
export const inject = { ...ptrace, ...memory, ...scratch };
