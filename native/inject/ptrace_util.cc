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

namespace {

// The frame every injection runs in: the thread's registers and blocked
// mask saved, every signal but SIGTRAP blocked, one resume at a time with a
// bounded wait for the next stop, and everything put back at the end (or on
// any failure while the thread still exists). InjectSyscall and InjectBatch
// differ only in the registers they start from and in what stop ends them.
class InjectionFrame {
 public:
  InjectionFrame(pid_t tid, InjectResult* res, const char* what_wait, const char* what_exit)
      : tid_(tid), res_(res), what_wait_(what_wait), what_exit_(what_exit) {}

  // Saves registers + mask and blocks all but SIGTRAP. False: res_ filled.
  bool Enter() {
    if (ptrace(PTRACE_GETREGS, tid_, nullptr, &saved_) < 0) return Fail("ptrace(PTRACE_GETREGS)");
    if (ptrace(PTRACE_GETSIGMASK, tid_, sizeof(saved_mask_), &saved_mask_) < 0)
      return Fail("ptrace(PTRACE_GETSIGMASK)");
    uint64_t block = ~(1ULL << (SIGTRAP - 1));
    if (ptrace(PTRACE_SETSIGMASK, tid_, sizeof(block), &block) < 0) return Fail("ptrace(PTRACE_SETSIGMASK)");
    entered_ = true;
    return true;
  }

  const user_regs_struct& saved() const { return saved_; }

  bool SetRegs(const user_regs_struct& regs) {
    if (ptrace(PTRACE_SETREGS, tid_, nullptr, &regs) < 0) return FailPutBack("ptrace(PTRACE_SETREGS)");
    return true;
  }

  bool GetRegs(user_regs_struct* regs) {
    if (ptrace(PTRACE_GETREGS, tid_, nullptr, regs) < 0) return FailPutBack("ptrace(PTRACE_GETREGS)");
    return true;
  }

  // Resumes the thread (PTRACE_CONT or PTRACE_SINGLESTEP) and waits for its
  // next stop until `deadline_ns`. On a timeout the thread is interrupted
  // (it may still be running our code) before the frame is put back; a
  // thread that exited is reported as ESRCH with its wait status.
  bool Resume(bool cont, int64_t deadline_ns, WaitResult* w) {
    if (ptrace(cont ? PTRACE_CONT : PTRACE_SINGLESTEP, tid_, nullptr, nullptr) < 0)
      return FailPutBack(cont ? "ptrace(PTRACE_CONT)" : "ptrace(PTRACE_SINGLESTEP)");
    int64_t left_ms = (deadline_ns - NowNs()) / 1000000LL;
    *w = WaitPid(tid_, left_ms > 0 ? static_cast<int>(left_ms) : 0);
    if (w->err != 0) {
      if (w->err == ETIMEDOUT) {
        ptrace(PTRACE_INTERRUPT, tid_, nullptr, nullptr);
        WaitPid(tid_, 1000);
      }
      errno = w->err;
      return FailPutBack(what_wait_);
    }
    if (WIFEXITED(w->status) || WIFSIGNALED(w->status)) {
      entered_ = false;  // nothing to put back
      res_->unexpected_status = w->status;
      errno = ESRCH;
      return Fail(what_exit_);
    }
    return true;
  }

  // A stop that is not the one the injection ends with (SIGSTOP, a fault in
  // the injected code...): put the thread back; the caller reports it.
  bool UnexpectedStop(int status, const char* what) {
    res_->unexpected_status = status;
    errno = EINTR;
    return FailPutBack(what);
  }

  // Puts registers + mask back, checked (the injection's normal end).
  bool Leave() {
    entered_ = false;
    if (ptrace(PTRACE_SETREGS, tid_, nullptr, &saved_) < 0) return Fail("ptrace(PTRACE_SETREGS)");
    if (ptrace(PTRACE_SETSIGMASK, tid_, sizeof(saved_mask_), &saved_mask_) < 0)
      return Fail("ptrace(PTRACE_SETSIGMASK)");
    return true;
  }

  bool Fail(const char* what) {
    res_->err = errno;
    res_->what = what;
    return false;
  }

  // Fail after the frame was entered: best-effort put-back, errno kept.
  bool FailPutBack(const char* what) {
    if (entered_) {
      int e = errno;
      ptrace(PTRACE_SETREGS, tid_, nullptr, &saved_);
      ptrace(PTRACE_SETSIGMASK, tid_, sizeof(saved_mask_), &saved_mask_);
      entered_ = false;
      errno = e;
    }
    return Fail(what);
  }

 private:
  pid_t tid_;
  InjectResult* res_;
  const char* what_wait_;
  const char* what_exit_;
  user_regs_struct saved_{};
  uint64_t saved_mask_ = 0;
  bool entered_ = false;
};

bool IsTrapStop(int status) { return WIFSTOPPED(status) && WSTOPSIG(status) == SIGTRAP && (status >> 16) == 0; }

}  // namespace

InjectResult InjectSyscall(pid_t tid, uint64_t nr, const uint64_t args[6], uint64_t gadget,
                           bool use_trap, int timeout_ms) {
  InjectResult res;
  InjectionFrame frame(tid, &res, "waitpid (injected syscall)", "injected syscall: thread exited");
  if (!frame.Enter()) return res;
  user_regs_struct regs = frame.saved();
  regs.rip = gadget;
  regs.rax = nr;
  regs.orig_rax = static_cast<uint64_t>(-1);
  regs.rdi = args[0];
  regs.rsi = args[1];
  regs.rdx = args[2];
  regs.r10 = args[3];
  regs.r8 = args[4];
  regs.r9 = args[5];
  if (!frame.SetRegs(regs)) return res;
  // One resume normally; again after each fork/clone event stop.
  const int64_t deadline = NowNs() + static_cast<int64_t>(timeout_ms) * 1000000LL;
  WaitResult w;
  for (;;) {
    if (!frame.Resume(use_trap, deadline, &w)) return res;
    int event = (w.status >> 16) & 0xff;
    bool fork_event = event == PTRACE_EVENT_FORK || event == PTRACE_EVENT_VFORK || event == PTRACE_EVENT_CLONE;
    if (!WIFSTOPPED(w.status) || WSTOPSIG(w.status) != SIGTRAP || !fork_event) break;
    unsigned long msg = 0;
    if (ptrace(PTRACE_GETEVENTMSG, tid, nullptr, &msg) < 0) {
      frame.FailPutBack("ptrace(PTRACE_GETEVENTMSG)");
      return res;
    }
    res.child = static_cast<pid_t>(msg);
  }
  if (!IsTrapStop(w.status)) {
    frame.UnexpectedStop(w.status, "injected syscall: unexpected stop");
    return res;
  }
  user_regs_struct after;
  if (!frame.GetRegs(&after)) return res;
  res.result = static_cast<int64_t>(after.rax);
  frame.Leave();
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
  InjectionFrame frame(tid, &res, "waitpid (injected syscall batch)", "injected syscall batch: thread exited");
  if (!frame.Enter()) return res;
  user_regs_struct regs = frame.saved();
  regs.rip = blob;
  regs.rdi = table;
  regs.orig_rax = static_cast<uint64_t>(-1);
  if (!frame.SetRegs(regs)) return res;
  WaitResult w;
  if (!frame.Resume(true, NowNs() + static_cast<int64_t>(timeout_ms) * 1000000LL, &w)) return res;
  size_t len = 0;
  BatchBlob(&len);
  user_regs_struct after;
  bool trapped = IsTrapStop(w.status) && ptrace(PTRACE_GETREGS, tid, nullptr, &after) == 0 && after.rip == blob + len;
  if (!trapped) {
    frame.UnexpectedStop(w.status, "injected syscall batch: unexpected stop");
    return res;
  }
  frame.Leave();
  return res;
}

}  // namespace lr::inject
