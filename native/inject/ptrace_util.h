// Shared C++ helpers of native/inject: ptrace stops, register access and
// single-syscall injection. Used by the JS bindings in this directory and by
// the restore-side primitives (restore_*.cc), so both sides agree on how a
// stop is waited for and how an injected syscall leaves the thread.
//
// Every function here runs on the thread that called PTRACE_SEIZE (node's
// main thread): ptrace ties a tracee to the tracing *thread*.
#pragma once

#include <sys/types.h>
#include <sys/user.h>

#include <cstdint>

namespace lr::inject {

// Result of a bounded wait. `err` is 0 on success, else an errno value
// (ETIMEDOUT when nothing happened in time, ECHILD/ESRCH etc. from waitpid).
struct WaitResult {
  int err = 0;
  pid_t pid = 0;
  int status = 0;
};

// waitpid(pid, __WALL | extra) polled until something is reported or
// `timeout_ms` passes (node cannot block in waitpid forever, and waitpid has
// no timeout). Spins briefly first: ptrace stops usually come within µs.
WaitResult WaitPid(pid_t pid, int timeout_ms, int extra_flags = 0);

// Outcome of InjectSyscall; `err` is 0 or an errno describing why the
// injection itself failed (the syscall's own -errno is in `result`).
struct InjectResult {
  int err = 0;
  const char* what = nullptr;  // failing step, for the error message
  int64_t result = 0;          // raw rax after the syscall
  int unexpected_status = 0;   // wait status when a foreign stop interfered
  pid_t child = 0;             // task created by the syscall (fork/clone event), else 0
};

// Runs one syscall in a ptrace-stopped thread and puts every register and
// the blocked mask back as they were.
//  gadget: address of a `syscall` (0f 05) instruction in the tracee.
//  use_trap=false: PTRACE_SINGLESTEP over it (e.g. the vDSO's 0f 05).
//  use_trap=true: PTRACE_CONT, the gadget must be followed by int3 (cc).
// orig_rax is set to -1 so the kernel does not apply syscall-restart fix-ups
// to our rip when the thread was stopped inside an interrupted syscall; all
// signals but SIGTRAP are blocked meanwhile so a pending signal cannot be
// delivered in the middle (SIGTRAP must stay unblocked: forcing a blocked
// SIGTRAP resets its handler to SIG_DFL).
// A fork/clone/clone3 in a tracee with PTRACE_O_TRACEFORK/TRACECLONE stops
// first at PTRACE_EVENT_FORK/VFORK/CLONE: the new task's pid (in our pid
// namespace) is taken from the event message into `child` and the syscall is
// stepped on to its end. The new task is left in its initial stop, auto-
// attached to us: the caller must wait for that stop. It starts with the
// registers and blocked mask of the injection (all but SIGTRAP blocked).
InjectResult InjectSyscall(pid_t tid, uint64_t nr, const uint64_t args[6], uint64_t gadget,
                           bool use_trap, int timeout_ms);

// Syscall batches: a small position-independent routine (the "batch blob",
// copied into the tracee's scratch area, which is executable) runs a table of
// syscalls in the tracee with one resume and one stop instead of one
// round trip each. Table entries are 64 bytes: word 0 the syscall number
// (low 32 bits; bit 32 set: the call may fail and the batch goes on), words
// 1-6 the arguments, word 7 the result (written by the blob); a word 0 of all
// ones ends the table. The blob stops at the first failing call (-4095..-1)
// that may not fail, then traps (int3).
const uint8_t* BatchBlob(size_t* len);

// Runs the batch at `table` (in the tracee) with the blob at `blob`:
// registers and blocked mask are put back as InjectSyscall does. `result`
// is unused; results are in the table.
InjectResult InjectBatch(pid_t tid, uint64_t blob, uint64_t table, int timeout_ms);

}  // namespace lr::inject
