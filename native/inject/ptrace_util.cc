// Bounded waits for ptrace stops and single-syscall injection (see
// ptrace_util.h). No Node-API here: callers turn errors into JS errors.
#include "inject/ptrace_util.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/wait.h>
#include <time.h>

#include <cstring>

#include "common/clock.h"

namespace lr::inject {

namespace {

// Signed, so that deadline arithmetic can go below zero.
int64_t NowNs() { return static_cast<int64_t>(lr::NowNs()); }

}  // namespace

WaitResult WaitPid(pid_t pid, int timeout_ms, int extra_flags) {
  WaitResult r;
  const int64_t start = NowNs();
  const int64_t deadline = start + static_cast<int64_t>(timeout_ms) * 1000000LL;
  int64_t sleep_ns = 5000;
  for (int spins = 0;; spins++) {
    int status = 0;
    pid_t got = waitpid(pid, &status, __WALL | WNOHANG | extra_flags);
    if (got > 0) {
      r.pid = got;
      r.status = status;
      return r;
    }
    if (got < 0) {
      if (errno == EINTR) continue;
      r.err = errno;
      return r;
    }
    int64_t now = NowNs();
    if (now >= deadline) {
      r.err = ETIMEDOUT;
      return r;
    }
    // A stop after SINGLESTEP/CONT usually arrives within tens of µs; yield
    // first, then back off so a long wait does not burn a CPU.
    if (now - start < 50000) {
      sched_yield();
      continue;
    }
    timespec ts{0, static_cast<long>(sleep_ns)};
    nanosleep(&ts, nullptr);
    if (sleep_ns < 1000000) sleep_ns *= 2;
  }
}

InjectResult InjectSyscall(pid_t tid, uint64_t nr, const uint64_t args[6], uint64_t gadget,
                           bool use_trap, int timeout_ms) {
  InjectResult res;
  auto fail = [&](const char* what) {
    res.err = errno;
    res.what = what;
    return res;
  };

  user_regs_struct saved;
  if (ptrace(PTRACE_GETREGS, tid, nullptr, &saved) < 0) return fail("ptrace(PTRACE_GETREGS)");
  uint64_t saved_mask = 0;
  if (ptrace(PTRACE_GETSIGMASK, tid, sizeof(saved_mask), &saved_mask) < 0)
    return fail("ptrace(PTRACE_GETSIGMASK)");
  uint64_t block = ~(1ULL << (SIGTRAP - 1));
  if (ptrace(PTRACE_SETSIGMASK, tid, sizeof(block), &block) < 0)
    return fail("ptrace(PTRACE_SETSIGMASK)");

  user_regs_struct regs = saved;
  regs.rip = gadget;
  regs.rax = nr;
  regs.orig_rax = static_cast<uint64_t>(-1);
  regs.rdi = args[0];
  regs.rsi = args[1];
  regs.rdx = args[2];
  regs.r10 = args[3];
  regs.r8 = args[4];
  regs.r9 = args[5];

  // From here on every exit path must try to put regs + mask back.
  auto restore = [&]() {
    int e = errno;
    ptrace(PTRACE_SETREGS, tid, nullptr, &saved);
    ptrace(PTRACE_SETSIGMASK, tid, sizeof(saved_mask), &saved_mask);
    errno = e;
  };

  if (ptrace(PTRACE_SETREGS, tid, nullptr, &regs) < 0) {
    restore();
    return fail("ptrace(PTRACE_SETREGS)");
  }
  // One resume normally; again after each fork/clone event stop.
  const int64_t deadline = NowNs() + static_cast<int64_t>(timeout_ms) * 1000000LL;
  WaitResult w;
  for (;;) {
    long rc = use_trap ? ptrace(PTRACE_CONT, tid, nullptr, nullptr)
                       : ptrace(PTRACE_SINGLESTEP, tid, nullptr, nullptr);
    if (rc < 0) {
      restore();
      return fail(use_trap ? "ptrace(PTRACE_CONT)" : "ptrace(PTRACE_SINGLESTEP)");
    }
    int64_t left_ms = (deadline - NowNs()) / 1000000LL;
    w = WaitPid(tid, left_ms > 0 ? static_cast<int>(left_ms) : 0);
    if (w.err != 0) {
      // The thread may still be running our syscall: stop it before restoring.
      if (w.err == ETIMEDOUT) {
        ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr);
        WaitPid(tid, 1000);
      }
      errno = w.err;
      restore();
      return fail("waitpid (injected syscall)");
    }
    if (WIFEXITED(w.status) || WIFSIGNALED(w.status)) {
      errno = ESRCH;
      res.unexpected_status = w.status;
      return fail("injected syscall: thread exited");
    }
    int event = (w.status >> 16) & 0xff;
    bool fork_event = event == PTRACE_EVENT_FORK || event == PTRACE_EVENT_VFORK || event == PTRACE_EVENT_CLONE;
    if (!WIFSTOPPED(w.status) || WSTOPSIG(w.status) != SIGTRAP || !fork_event) break;
    unsigned long msg = 0;
    if (ptrace(PTRACE_GETEVENTMSG, tid, nullptr, &msg) < 0) {
      restore();
      return fail("ptrace(PTRACE_GETEVENTMSG)");
    }
    res.child = static_cast<pid_t>(msg);
  }
  if (!WIFSTOPPED(w.status) || WSTOPSIG(w.status) != SIGTRAP || (w.status >> 16) != 0) {
    // A stop for something else (SIGSTOP, an unblockable fault in the
    // syscall gadget...). Put the thread back; the caller reports it.
    res.unexpected_status = w.status;
    errno = EINTR;
    restore();
    return fail("injected syscall: unexpected stop");
  }
  user_regs_struct after;
  if (ptrace(PTRACE_GETREGS, tid, nullptr, &after) < 0) {
    restore();
    return fail("ptrace(PTRACE_GETREGS)");
  }
  res.result = static_cast<int64_t>(after.rax);
  if (ptrace(PTRACE_SETREGS, tid, nullptr, &saved) < 0) return fail("ptrace(PTRACE_SETREGS)");
  if (ptrace(PTRACE_SETSIGMASK, tid, sizeof(saved_mask), &saved_mask) < 0)
    return fail("ptrace(PTRACE_SETSIGMASK)");
  return res;
}

// The batch blob (see ptrace_util.h); assembled here, never run here.
// rbx: the current entry; r12: its word 0.
asm(R"(
  .pushsection .rodata.lr_batch_blob, "a"
  .globl lr_batch_blob_start
  .globl lr_batch_blob_end
lr_batch_blob_start:
  movq %rdi, %rbx
1:
  movq (%rbx), %r12
  cmpq $-1, %r12
  je 3f
  movl %r12d, %eax
  movq 8(%rbx), %rdi
  movq 16(%rbx), %rsi
  movq 24(%rbx), %rdx
  movq 32(%rbx), %r10
  movq 40(%rbx), %r8
  movq 48(%rbx), %r9
  syscall
  movq %rax, 56(%rbx)
  cmpq $-4095, %rax
  jb 2f
  btq $32, %r12
  jnc 3f
2:
  addq $64, %rbx
  jmp 1b
3:
  int3
lr_batch_blob_end:
  .popsection
)");

extern "C" const uint8_t lr_batch_blob_start[];
extern "C" const uint8_t lr_batch_blob_end[];

const uint8_t* BatchBlob(size_t* len) {
  *len = static_cast<size_t>(lr_batch_blob_end - lr_batch_blob_start);
  return lr_batch_blob_start;
}

InjectResult InjectBatch(pid_t tid, uint64_t blob, uint64_t table, int timeout_ms) {
  InjectResult res;
  auto fail = [&](const char* what) {
    res.err = errno;
    res.what = what;
    return res;
  };
  user_regs_struct saved;
  if (ptrace(PTRACE_GETREGS, tid, nullptr, &saved) < 0) return fail("ptrace(PTRACE_GETREGS)");
  uint64_t saved_mask = 0;
  if (ptrace(PTRACE_GETSIGMASK, tid, sizeof(saved_mask), &saved_mask) < 0) return fail("ptrace(PTRACE_GETSIGMASK)");
  uint64_t block = ~(1ULL << (SIGTRAP - 1));
  if (ptrace(PTRACE_SETSIGMASK, tid, sizeof(block), &block) < 0) return fail("ptrace(PTRACE_SETSIGMASK)");
  auto restore = [&]() {
    int e = errno;
    ptrace(PTRACE_SETREGS, tid, nullptr, &saved);
    ptrace(PTRACE_SETSIGMASK, tid, sizeof(saved_mask), &saved_mask);
    errno = e;
  };
  user_regs_struct regs = saved;
  regs.rip = blob;
  regs.rdi = table;
  regs.orig_rax = static_cast<uint64_t>(-1);
  if (ptrace(PTRACE_SETREGS, tid, nullptr, &regs) < 0) {
    restore();
    return fail("ptrace(PTRACE_SETREGS)");
  }
  if (ptrace(PTRACE_CONT, tid, nullptr, nullptr) < 0) {
    restore();
    return fail("ptrace(PTRACE_CONT)");
  }
  WaitResult w = WaitPid(tid, timeout_ms);
  if (w.err != 0) {
    if (w.err == ETIMEDOUT) {
      ptrace(PTRACE_INTERRUPT, tid, nullptr, nullptr);
      WaitPid(tid, 1000);
    }
    errno = w.err;
    restore();
    return fail("waitpid (injected syscall batch)");
  }
  if (WIFEXITED(w.status) || WIFSIGNALED(w.status)) {
    errno = ESRCH;
    res.unexpected_status = w.status;
    return fail("injected syscall batch: thread exited");
  }
  size_t len = 0;
  BatchBlob(&len);
  user_regs_struct after;
  bool trapped = WIFSTOPPED(w.status) && WSTOPSIG(w.status) == SIGTRAP && (w.status >> 16) == 0 &&
                 ptrace(PTRACE_GETREGS, tid, nullptr, &after) == 0 && after.rip == blob + len;
  if (!trapped) {
    res.unexpected_status = w.status;
    errno = EINTR;
    restore();
    return fail("injected syscall batch: unexpected stop");
  }
  if (ptrace(PTRACE_SETREGS, tid, nullptr, &saved) < 0) return fail("ptrace(PTRACE_SETREGS)");
  if (ptrace(PTRACE_SETSIGMASK, tid, sizeof(saved_mask), &saved_mask) < 0) return fail("ptrace(PTRACE_SETSIGMASK)");
  return res;
}

}  // namespace lr::inject
