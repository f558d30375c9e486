// Restore-side process control: spawning a traced stub with an exact pid
// (clone3 + set_tid, PTRACE_TRACEME, execve of a static stub), registers and
// xstate, signal mask, detaching, and tearing a half-restored tree down
// without leaving zombies behind. System calls are injected with the shared
// injector (ptrace_util.h, injectSyscall/injectSyscallFork).
//
// Everything here is synchronous and must run on the tracer thread (the JS
// main thread): the kernel only accepts ptrace requests from the thread that
// created (and therefore traces) the stub.
#include <cpuid.h>
#include <elf.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/sched.h>
#include <sched.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "common/errors.h"
#include "inject/restore.h"

namespace lr {
namespace {

constexpr int kRegCount = 27;  // user_regs_struct == CRIU user_x86_regs_entry order
static_assert(sizeof(user_regs_struct) == kRegCount * 8, "unexpected user_regs_struct");

std::string TidDetail(int tid) { return "(tid " + std::to_string(tid) + ")"; }

void GetRegs(Napi::Env env, int tid, user_regs_struct* r) {
  if (ptrace(PTRACE_GETREGS, tid, nullptr, r) != 0) ThrowErrno(env, errno, "ptrace(PTRACE_GETREGS)", TidDetail(tid));
}

void SetRegs(Napi::Env env, int tid, const user_regs_struct* r) {
  if (ptrace(PTRACE_SETREGS, tid, nullptr, r) != 0) ThrowErrno(env, errno, "ptrace(PTRACE_SETREGS)", TidDetail(tid));
}

// waitpid that retries EINTR.
pid_t WaitTid(int tid, int* status, int flags) {
  pid_t r;
  do r = waitpid(tid, status, flags | __WALL);
  while (r < 0 && errno == EINTR);
  return r;
}

// restoreSpawnStub(pid, stubPath, newPidns, sibling, nsFlags) -> pid
// The child is a copy of this (multi-threaded) process, so between clone3 and
// execve it only issues raw system calls: no allocation, no locks.
// sibling (CRIU's --restore-sibling): CLONE_PARENT makes the stub a child of
// our parent. PTRACE_TRACEME would then hand it to that parent, so the stub
// waits on a pipe until we have seized it; we see its execve as a
// PTRACE_EVENT_EXEC stop and then, through a SIGTRAP we send, the same
// signal stop a TRACEME stub gives.
Napi::Value SpawnStub(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t want = ArgI32(info, 0, "pid");
  if (!info[1].IsString()) throw Napi::TypeError::New(env, "stubPath must be a string");
  std::string path = info[1].As<Napi::String>().Utf8Value();
  bool newPidns = info.Length() > 2 && info[2].IsBoolean() && info[2].As<Napi::Boolean>().Value();
  bool sibling = info.Length() > 3 && info[3].IsBoolean() && info[3].As<Napi::Boolean>().Value();
  // Further CLONE_NEW* flags for a container's init (with newPidns only).
  uint64_t nsFlags = info.Length() > 4 && info[4].IsNumber() ? static_cast<uint64_t>(info[4].As<Napi::Number>().Int64Value()) : 0;
  constexpr uint64_t kNsMask = CLONE_NEWNS | CLONE_NEWUTS | CLONE_NEWIPC | CLONE_NEWNET | CLONE_NEWCGROUP;
  if ((nsFlags & ~kNsMask) != 0 || (nsFlags != 0 && !newPidns)) throw Napi::RangeError::New(env, "nsFlags: only CLONE_NEWNS/UTS/IPC/NET/CGROUP, with newPidns");

  const char* argv[] = {path.c_str(), nullptr};
  const char* envp[] = {nullptr};
  pid_t tid = want;
  clone_args args{};
  args.exit_signal = SIGCHLD;
  if (newPidns) {
    // The first task of a new pid namespace is its pid 1; the outer pid is free.
    args.flags = CLONE_NEWPID | nsFlags;
  } else {
    args.set_tid = reinterpret_cast<uint64_t>(&tid);
    args.set_tid_size = 1;
  }
  int gate[2] = {-1, -1};
  if (sibling) {
    if (pipe2(gate, O_CLOEXEC) != 0) ThrowErrno(env, errno, "pipe2", "(restore-sibling gate)");
    args.flags |= CLONE_PARENT;
    // clone3 refuses an exit signal with CLONE_PARENT: the child takes ours.
    args.exit_signal = 0;
  }
  long r = syscall(SYS_clone3, &args, sizeof(args));
  if (r < 0) {
    int e = errno;
    if (sibling) {
      close(gate[0]);
      close(gate[1]);
    }
    ThrowErrno(env, e, "clone3", "(set_tid " + std::to_string(want) + (sibling ? ", CLONE_PARENT" : "") + ")");
  }
  if (r == 0) {
    // Child. Default every signal and empty the mask first (our handlers
    // must not run here), then drop every fd but stdio.
    struct kact { uint64_t handler, flags, restorer, mask; } dfl{};
    for (int s = 1; s <= 64; s++) {
      if (s == SIGKILL || s == SIGSTOP) continue;
      syscall(SYS_rt_sigaction, s, &dfl, nullptr, 8);
    }
    uint64_t empty = 0;
    syscall(SYS_rt_sigprocmask, SIG_SETMASK, &empty, nullptr, 8);
    if (sibling) {
      syscall(SYS_close, gate[1]);
      char c;
      long n;
      do n = syscall(SYS_read, gate[0], &c, 1);
      while (n < 0 && errno == EINTR);
      if (n != 1) syscall(SYS_exit_group, 125);  // the restorer gave up before seizing us
    }
    syscall(SYS_close_range, 3, ~0U, 0);
    if (!sibling && syscall(SYS_ptrace, PTRACE_TRACEME, 0, 0, 0) != 0) syscall(SYS_exit_group, 126);
    syscall(SYS_execve, argv[0], argv, envp);
    syscall(SYS_exit_group, 127);
  }
  pid_t pid = static_cast<pid_t>(r);
  int st = 0;
  long opts = PTRACE_O_EXITKILL | PTRACE_O_TRACECLONE | PTRACE_O_TRACEFORK | PTRACE_O_TRACESYSGOOD;
  if (sibling) {
    close(gate[0]);
    if (ptrace(PTRACE_SEIZE, pid, nullptr, reinterpret_cast<void*>(opts | PTRACE_O_TRACEEXEC)) != 0) {
      // Closing the gate unseized makes the stub exit; our parent reaps it.
      int e = errno;
      close(gate[1]);
      ThrowErrno(env, e, "ptrace(PTRACE_SEIZE)", TidDetail(pid) + " (restore-sibling stub)");
    }
    char go = 1;
    ssize_t w;
    do w = write(gate[1], &go, 1);
    while (w < 0 && errno == EINTR);
    close(gate[1]);
    if (WaitTid(pid, &st, 0) != pid) ThrowErrno(env, errno, "waitpid", TidDetail(pid));
    if (WIFSTOPPED(st) && (st >> 8) == (SIGTRAP | (PTRACE_EVENT_EXEC << 8))) {
      // The exec event stop is still inside execve, whose return would
      // overwrite rax. A pending SIGTRAP stops it again on the way out to
      // user space: the same clean stop a TRACEME stub gives.
      kill(pid, SIGTRAP);
      if (ptrace(PTRACE_CONT, pid, nullptr, nullptr) == 0 && WaitTid(pid, &st, 0) == pid && WIFSTOPPED(st) &&
          (st >> 8) == SIGTRAP)
        return Napi::Number::New(env, pid);
    }
    // Not our child: a tracer sees the exit, the parent reaps the zombie.
    if (WIFSTOPPED(st)) kill(pid, SIGKILL);
    ThrowErrno(env, ENOEXEC, "execve", "of the restore stub " + path + " failed (status " + std::to_string(st) + ")");
  }
  if (WaitTid(pid, &st, 0) != pid) ThrowErrno(env, errno, "waitpid", TidDetail(pid));
  if (!WIFSTOPPED(st) || WSTOPSIG(st) != SIGTRAP) {
    if (WIFSTOPPED(st)) {
      kill(pid, SIGKILL);
      WaitTid(pid, &st, 0);
    }
    ThrowErrno(env, ENOEXEC, "execve", "of the restore stub " + path + " failed (status " + std::to_string(st) + ")");
  }
  if (ptrace(PTRACE_SETOPTIONS, pid, nullptr, reinterpret_cast<void*>(opts)) != 0) {
    int e = errno;
    kill(pid, SIGKILL);
    WaitTid(pid, &st, 0);
    ThrowErrno(env, e, "ptrace(PTRACE_SETOPTIONS)", TidDetail(pid));
  }
  return Napi::Number::New(env, pid);
}

Napi::Value GetRegsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int tid = ArgI32(info, 0, "tid");
  user_regs_struct r;
  GetRegs(env, tid, &r);
  Napi::ArrayBuffer ab = Napi::ArrayBuffer::New(env, sizeof(r));
  memcpy(ab.Data(), &r, sizeof(r));
  return Napi::BigUint64Array::New(env, kRegCount, ab, 0);
}

Napi::Value SetRegsJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int tid = ArgI32(info, 0, "tid");
  if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array)
    throw Napi::TypeError::New(env, "regs must be a BigUint64Array");
  Napi::BigUint64Array a = info[1].As<Napi::BigUint64Array>();
  if (a.ElementLength() != kRegCount) throw Napi::RangeError::New(env, "regs must have 27 elements");
  user_regs_struct r;
  memcpy(&r, a.Data(), sizeof(r));
  SetRegs(env, tid, &r);
  return env.Undefined();
}

Napi::Value GetXstate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int tid = ArgI32(info, 0, "tid");
  std::vector<uint8_t> buf(16384);
  iovec iov{buf.data(), buf.size()};
  if (ptrace(PTRACE_GETREGSET, tid, reinterpret_cast<void*>(NT_X86_XSTATE), &iov) != 0)
    ThrowErrno(env, errno, "ptrace(PTRACE_GETREGSET)", TidDetail(tid));
  return Napi::Buffer<uint8_t>::Copy(env, buf.data(), iov.iov_len);
}

Napi::Value SetXstate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int tid = ArgI32(info, 0, "tid");
  if (!info[1].IsBuffer()) throw Napi::TypeError::New(env, "xstate must be a Buffer");
  Napi::Buffer<uint8_t> b = info[1].As<Napi::Buffer<uint8_t>>();
  iovec iov{b.Data(), b.Length()};
  if (ptrace(PTRACE_SETREGSET, tid, reinterpret_cast<void*>(NT_X86_XSTATE), &iov) != 0)
    ThrowErrno(env, errno, "ptrace(PTRACE_SETREGSET)", TidDetail(tid));
  return env.Undefined();
}

// restoreXstateLayout() -> [[component, offset, size], ...] from CPUID 0xD.
Napi::Value XstateLayout(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  for (unsigned c = 2; c < 32; c++) {
    unsigned eax = 0, ebx = 0, ecx = 0, edx = 0;
    if (!__get_cpuid_count(0xd, c, &eax, &ebx, &ecx, &edx)) break;
    if (eax == 0) continue;
    Napi::Array e = Napi::Array::New(env, 3);
    e.Set(0u, c);
    e.Set(1u, ebx);
    e.Set(2u, eax);
    out.Set(n++, e);
  }
  return out;
}

Napi::Value SetSigmask(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int tid = ArgI32(info, 0, "tid");
  uint64_t mask = ArgU64(info, 1, "mask");
  if (ptrace(PTRACE_SETSIGMASK, tid, reinterpret_cast<void*>(sizeof(mask)), &mask) != 0)
    ThrowErrno(env, errno, "ptrace(PTRACE_SETSIGMASK)", TidDetail(tid));
  return env.Undefined();
}

Napi::Value Detach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int tid = ArgI32(info, 0, "tid");
  int sig = info.Length() > 1 ? ArgI32(info, 1, "sig") : 0;
  if (ptrace(PTRACE_DETACH, tid, nullptr, reinterpret_cast<void*>(static_cast<long>(sig))) != 0)
    ThrowErrno(env, errno, "ptrace(PTRACE_DETACH)", TidDetail(tid));
  return env.Undefined();
}

// restoreKillTree(groups: number[][]) — groups top-down (parents first), each
// [leader, ...other tids]. Kills them all, then reaps them bottom-up. While it runs this
// process is a child subreaper, so children of a killed stub are re-parented
// here (not to a slow init) and reaped too. Best effort: never throws for a
// task that is already gone.
Napi::Value KillTree(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsArray()) throw Napi::TypeError::New(env, "groups must be an array");
  Napi::Array groups = info[0].As<Napi::Array>();
  int was = 0;
  prctl(PR_GET_CHILD_SUBREAPER, &was, 0, 0, 0);
  if (!was) prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0);
  // Kill every group first, then reap children before parents: a killed
  // pid-namespace init waits in its exit for every task of its namespace
  // to be reaped, and we, their tracer, reap them.
  for (uint32_t g = 0; g < groups.Length(); g++) {
    Napi::Array tids = groups.Get(g).As<Napi::Array>();
    if (tids.Length() == 0) continue;
    syscall(SYS_kill, tids.Get(0u).As<Napi::Number>().Int32Value(), SIGKILL);
  }
  for (uint32_t g = groups.Length(); g-- > 0;) {
    Napi::Array tids = groups.Get(g).As<Napi::Array>();
    if (tids.Length() == 0) continue;
    int leader = tids.Get(0u).As<Napi::Number>().Int32Value();
    // Non-leader threads first: the leader is only reported once its group is empty.
    for (uint32_t i = 1; i < tids.Length(); i++) {
      int t = tids.Get(i).As<Napi::Number>().Int32Value();
      int st;
      while (WaitTid(t, &st, 0) == t && !WIFEXITED(st) && !WIFSIGNALED(st)) {
      }
    }
    int st;
    while (WaitTid(leader, &st, 0) == leader && !WIFEXITED(st) && !WIFSIGNALED(st)) {
    }
  }
  // A task that exited before its parent stub was reaped by us only as its
  // tracer: its zombie stayed for its real parent, and once that died it
  // came to us, the subreaper. Reap those too (else they stay as zombies of
  // this process: nobody else waits for them).
  for (uint32_t g = 0; g < groups.Length(); g++) {
    Napi::Array tids = groups.Get(g).As<Napi::Array>();
    if (tids.Length() == 0) continue;
    int st;
    WaitTid(tids.Get(0u).As<Napi::Number>().Int32Value(), &st, WNOHANG);
  }
  if (!was) prctl(PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0);
  return env.Undefined();
}

// restoreWaitpid(pid, nohang) -> null | { pid, status, exited, code, signal }
Napi::Value WaitpidJs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int pid = ArgI32(info, 0, "pid");
  bool nohang = info.Length() > 1 && info[1].ToBoolean().Value();
  int st = 0;
  pid_t r = WaitTid(pid, &st, nohang ? WNOHANG : 0);
  if (r < 0) ThrowErrno(env, errno, "waitpid", TidDetail(pid));
  if (r == 0) return env.Null();
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", r);
  o.Set("status", st);
  o.Set("exited", WIFEXITED(st));
  o.Set("code", WIFEXITED(st) ? WEXITSTATUS(st) : -1);
  o.Set("signal", WIFSIGNALED(st) ? WTERMSIG(st) : (WIFSTOPPED(st) ? WSTOPSIG(st) : 0));
  o.Set("stopped", WIFSTOPPED(st));
  return o;
}

}  // namespace

void InitRestorePtrace(Napi::Env env, Napi::Object exports) {
  exports.Set("restoreSpawnStub", Napi::Function::New(env, SpawnStub, "restoreSpawnStub"));
  exports.Set("restoreGetRegs", Napi::Function::New(env, GetRegsJs, "restoreGetRegs"));
  exports.Set("restoreSetRegs", Napi::Function::New(env, SetRegsJs, "restoreSetRegs"));
  exports.Set("restoreGetXstate", Napi::Function::New(env, GetXstate, "restoreGetXstate"));
  exports.Set("restoreSetXstate", Napi::Function::New(env, SetXstate, "restoreSetXstate"));
  exports.Set("restoreXstateLayout", Napi::Function::New(env, XstateLayout, "restoreXstateLayout"));
  exports.Set("restoreSetSigmask", Napi::Function::New(env, SetSigmask, "restoreSetSigmask"));
  exports.Set("restoreDetach", Napi::Function::New(env, Detach, "restoreDetach"));
  exports.Set("restoreKillTree", Napi::Function::New(env, KillTree, "restoreKillTree"));
  exports.Set("restoreWaitpid", Napi::Function::New(env, WaitpidJs, "restoreWaitpid"));
}

}  // namespace lr
