// JS bindings for ptrace: attach/stop/resume, bounded waits, registers and
// register sets, signal masks, pending signals, rseq and robust-list
// queries, and the single-syscall injection of ptrace_util.h (also for
// fork/clone calls whose new task the caller takes over).
// All synchronous on node's main thread (ptrace binds to the tracing thread).
#include <errno.h>
#include <linux/elf.h>
#include <signal.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/user.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstddef>
#include <cstdio>
#include <string>
#include <vector>

#include "common/errors.h"
#include "inject/init.h"
#include "inject/ptrace_util.h"

#ifndef PTRACE_SECCOMP_GET_FILTER
#define PTRACE_SECCOMP_GET_FILTER 0x420c
#endif
#ifndef PTRACE_SECCOMP_GET_METADATA
#define PTRACE_SECCOMP_GET_METADATA 0x420d
#endif
#ifndef PTRACE_GET_RSEQ_CONFIGURATION
#define PTRACE_GET_RSEQ_CONFIGURATION 0x420f
#endif

// glibc names this struct differently across versions; the ABI is fixed.
struct LrPeekSiginfoArgs {
  uint64_t off;
  uint32_t flags;
  int32_t nr;
};
constexpr uint32_t kPeekSiginfoShared = 1;

namespace lr {
namespace {

struct RegField {
  const char* name;
  size_t offset;
};

#define LR_REG(n) {#n, offsetof(user_regs_struct, n)}
// Same order and names as the kernel's struct user_regs_struct.
const RegField kRegs[] = {
    LR_REG(r15), LR_REG(r14), LR_REG(r13), LR_REG(r12), LR_REG(rbp),     LR_REG(rbx),
    LR_REG(r11), LR_REG(r10), LR_REG(r9),  LR_REG(r8),  LR_REG(rax),     LR_REG(rcx),
    LR_REG(rdx), LR_REG(rsi), LR_REG(rdi), LR_REG(orig_rax), LR_REG(rip), LR_REG(cs),
    LR_REG(eflags), LR_REG(rsp), LR_REG(ss), LR_REG(fs_base), LR_REG(gs_base), LR_REG(ds),
    LR_REG(es),  LR_REG(fs),  LR_REG(gs),
};
#undef LR_REG

std::string TidDetail(pid_t tid) { return "tid " + std::to_string(tid); }

pid_t ArgTid(const Napi::CallbackInfo& info, size_t i) {
  int32_t v = ArgI32(info, i, "tid");
  if (v <= 0) throw Napi::RangeError::New(info.Env(), "tid must be > 0");
  return v;
}

int ArgTimeout(const Napi::CallbackInfo& info, size_t i) {
  int32_t v = ArgI32(info, i, "timeoutMs");
  if (v < 0) throw Napi::RangeError::New(info.Env(), "timeoutMs must be >= 0");
  return v;
}

void Ptrace(Napi::Env env, enum __ptrace_request req, const char* name, pid_t tid, void* addr,
            void* data) {
  if (ptrace(req, tid, addr, data) < 0) ThrowErrno(env, errno, name, TidDetail(tid));
}

Napi::Value Seize(const Napi::CallbackInfo& info) {
  pid_t tid = ArgTid(info, 0);
  uint64_t opts = info.Length() > 1 ? ArgU64(info, 1, "options") : 0;
  Ptrace(info.Env(), PTRACE_SEIZE, "ptrace(PTRACE_SEIZE)", tid, nullptr,
         reinterpret_cast<void*>(opts));
  return info.Env().Undefined();
}

Napi::Value Interrupt(const Napi::CallbackInfo& info) {
  pid_t tid = ArgTid(info, 0);
  Ptrace(info.Env(), PTRACE_INTERRUPT, "ptrace(PTRACE_INTERRUPT)", tid, nullptr, nullptr);
  return info.Env().Undefined();
}

// cont/syscall/singlestep/detach all take (tid, sig).
template <enum __ptrace_request R>
Napi::Value Resume(const Napi::CallbackInfo& info) {
  static const char* names[] = {"ptrace(PTRACE_CONT)", "ptrace(PTRACE_SYSCALL)",
                                "ptrace(PTRACE_SINGLESTEP)", "ptrace(PTRACE_DETACH)"};
  const char* name = R == PTRACE_CONT ? names[0]
                     : R == PTRACE_SYSCALL ? names[1]
                     : R == PTRACE_SINGLESTEP ? names[2]
                                              : names[3];
  pid_t tid = ArgTid(info, 0);
  int sig = info.Length() > 1 && !info[1].IsUndefined() ? ArgI32(info, 1, "sig") : 0;
  Ptrace(info.Env(), R, name, tid, nullptr, reinterpret_cast<void*>(static_cast<long>(sig)));
  return info.Env().Undefined();
}

Napi::Value SetOptions(const Napi::CallbackInfo& info) {
  pid_t tid = ArgTid(info, 0);
  uint64_t opts = ArgU64(info, 1, "options");
  Ptrace(info.Env(), PTRACE_SETOPTIONS, "ptrace(PTRACE_SETOPTIONS)", tid, nullptr,
         reinterpret_cast<void*>(opts));
  return info.Env().Undefined();
}

Napi::Value GetEventMsg(const Napi::CallbackInfo& info) {
  pid_t tid = ArgTid(info, 0);
  unsigned long msg = 0;
  Ptrace(info.Env(), PTRACE_GETEVENTMSG, "ptrace(PTRACE_GETEVENTMSG)", tid, nullptr, &msg);
  return Napi::BigInt::New(info.Env(), static_cast<uint64_t>(msg));
}

Napi::Object StatusObject(Napi::Env env, pid_t pid, int status) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("pid", Napi::Number::New(env, pid));
  o.Set("status", Napi::Number::New(env, status));
  if (WIFEXITED(status)) {
    o.Set("kind", "exited");
    o.Set("exitCode", Napi::Number::New(env, WEXITSTATUS(status)));
  } else if (WIFSIGNALED(status)) {
    o.Set("kind", "signaled");
    o.Set("signal", Napi::Number::New(env, WTERMSIG(status)));
  } else if (WIFSTOPPED(status)) {
    o.Set("kind", "stopped");
    o.Set("signal", Napi::Number::New(env, WSTOPSIG(status)));
    o.Set("event", Napi::Number::New(env, (status >> 16) & 0xff));
  } else {
    o.Set("kind", "continued");
  }
  return o;
}

// waitTid(pid, timeoutMs, flags?) -> status object, or null on timeout.
Napi::Value Wait(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int32_t pid = ArgI32(info, 0, "pid");
  int timeout = ArgTimeout(info, 1);
  int flags = info.Length() > 2 && !info[2].IsUndefined() ? ArgI32(info, 2, "flags") : 0;
  inject::WaitResult w = inject::WaitPid(pid, timeout, flags);
  if (w.err == ETIMEDOUT) return env.Null();
  if (w.err != 0) ThrowErrno(env, w.err, "waitpid", "pid " + std::to_string(pid));
  return StatusObject(env, w.pid, w.status);
}

Napi::Value GetRegs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t tid = ArgTid(info, 0);
  user_regs_struct regs;
  Ptrace(env, PTRACE_GETREGS, "ptrace(PTRACE_GETREGS)", tid, nullptr, &regs);
  Napi::Object o = Napi::Object::New(env);
  const char* base = reinterpret_cast<const char*>(&regs);
  for (const RegField& f : kRegs)
    o.Set(f.name, Napi::BigInt::New(env, *reinterpret_cast<const uint64_t*>(base + f.offset)));
  return o;
}

Napi::Value SetRegs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t tid = ArgTid(info, 0);
  if (info.Length() < 2 || !info[1].IsObject()) throw Napi::TypeError::New(env, "regs must be an object");
  Napi::Object o = info[1].As<Napi::Object>();
  user_regs_struct regs;
  char* base = reinterpret_cast<char*>(&regs);
  for (const RegField& f : kRegs) {
    Napi::Value v = o.Get(f.name);
    if (!v.IsBigInt()) throw Napi::TypeError::New(env, std::string("regs.") + f.name + " must be a bigint");
    bool lossless = false;
    *reinterpret_cast<uint64_t*>(base + f.offset) = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throw Napi::RangeError::New(env, std::string("regs.") + f.name + " does not fit in 64 bits");
  }
  Ptrace(env, PTRACE_SETREGS, "ptrace(PTRACE_SETREGS)", tid, nullptr, &regs);
  return env.Undefined();
}

// getRegset(tid, nt) -> Buffer of the size the kernel reported in iov_len.
Napi::Value GetRegset(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t tid = ArgTid(info, 0);
  int32_t nt = ArgI32(info, 1, "nt");
  std::vector<char> buf(64 * 1024);  // larger than any XSAVE area today (AMX ~11 KiB)
  iovec iov{buf.data(), buf.size()};
  if (ptrace(PTRACE_GETREGSET, tid, reinterpret_cast<void*>(static_cast<long>(nt)), &iov) < 0)
    ThrowErrno(env, errno, "ptrace(PTRACE_GETREGSET)", TidDetail(tid) + " nt " + std::to_string(nt));
  return Napi::Buffer<char>::Copy(env, buf.data(), iov.iov_len);
}

Napi::Value SetRegset(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t tid = ArgTid(info, 0);
  int32_t nt = ArgI32(info, 1, "nt");
  if (info.Length() < 3 || !info[2].IsBuffer()) throw Napi::TypeError::New(env, "data must be a Buffer");
  Napi::Buffer<char> b = info[2].As<Napi::Buffer<char>>();
  iovec iov{b.Data(), b.Length()};
  if (ptrace(PTRACE_SETREGSET, tid, reinterpret_cast<void*>(static_cast<long>(nt)), &iov) < 0)
    ThrowErrno(env, errno, "ptrace(PTRACE_SETREGSET)", TidDetail(tid) + " nt " + std::to_string(nt));
  return env.Undefined();
}

Napi::Value GetSigmask(const Napi::CallbackInfo& info) {
  pid_t tid = ArgTid(info, 0);
  uint64_t mask = 0;
  Ptrace(info.Env(), PTRACE_GETSIGMASK, "ptrace(PTRACE_GETSIGMASK)", tid,
         reinterpret_cast<void*>(sizeof(mask)), &mask);
  return Napi::BigInt::New(info.Env(), mask);
}

Napi::Value SetSigmask(const Napi::CallbackInfo& info) {
  pid_t tid = ArgTid(info, 0);
  uint64_t mask = ArgU64(info, 1, "mask");
  Ptrace(info.Env(), PTRACE_SETSIGMASK, "ptrace(PTRACE_SETSIGMASK)", tid,
         reinterpret_cast<void*>(sizeof(mask)), &mask);
  return info.Env().Undefined();
}

struct RseqConf {
  uint64_t rseq_abi_pointer;
  uint32_t rseq_abi_size;
  uint32_t signature;
  uint32_t flags;
  uint32_t pad;
};

Napi::Value GetRseqConfiguration(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t tid = ArgTid(info, 0);
  RseqConf c{};
  long n = ptrace(static_cast<enum __ptrace_request>(PTRACE_GET_RSEQ_CONFIGURATION), tid,
                  reinterpret_cast<void*>(sizeof(c)), &c);
  if (n < 0) ThrowErrno(env, errno, "ptrace(PTRACE_GET_RSEQ_CONFIGURATION)", TidDetail(tid));
  Napi::Object o = Napi::Object::New(env);
  o.Set("rseqAbiPointer", Napi::BigInt::New(env, c.rseq_abi_pointer));
  o.Set("rseqAbiSize", Napi::Number::New(env, c.rseq_abi_size));
  o.Set("signature", Napi::Number::New(env, c.signature));
  o.Set("flags", Napi::Number::New(env, c.flags));
  return o;
}

// peekSiginfo(tid, shared) -> Buffer[] of raw 128-byte siginfo_t, queue order.
Napi::Value PeekSiginfo(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t tid = ArgTid(info, 0);
  bool shared = info.Length() > 1 && info[1].ToBoolean();
  Napi::Array out = Napi::Array::New(env);
  uint32_t n = 0;
  siginfo_t si[32];
  for (uint64_t off = 0;;) {
    LrPeekSiginfoArgs args{off, shared ? kPeekSiginfoShared : 0u, 32};
    long got = ptrace(static_cast<enum __ptrace_request>(PTRACE_PEEKSIGINFO), tid, &args, si);
    if (got < 0) ThrowErrno(env, errno, "ptrace(PTRACE_PEEKSIGINFO)", TidDetail(tid));
    if (got == 0) break;
    for (long i = 0; i < got; i++)
      out.Set(n++, Napi::Buffer<char>::Copy(env, reinterpret_cast<char*>(&si[i]), sizeof(siginfo_t)));
    off += static_cast<uint64_t>(got);
  }
  return out;
}

Napi::Value GetRobustList(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t tid = ArgTid(info, 0);
  void* head = nullptr;
  size_t len = 0;
  if (syscall(SYS_get_robust_list, tid, &head, &len) < 0)
    ThrowErrno(env, errno, "get_robust_list", TidDetail(tid));
  Napi::Object o = Napi::Object::New(env);
  o.Set("head", Napi::BigInt::New(env, static_cast<uint64_t>(reinterpret_cast<uintptr_t>(head))));
  o.Set("len", Napi::Number::New(env, static_cast<double>(len)));
  return o;
}

// Shared by injectSyscall and injectSyscallFork: parses
// (tid, nr, args[6] (bigint|number), gadget, useTrap, timeoutMs), injects,
// throws on an injection failure (not on the syscall's own -errno).
inject::InjectResult InjectFromArgs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t tid = ArgTid(info, 0);
  uint64_t nr = ArgU64(info, 1, "nr");
  if (info.Length() < 3 || !info[2].IsArray()) throw Napi::TypeError::New(env, "args must be an array");
  Napi::Array arr = info[2].As<Napi::Array>();
  if (arr.Length() > 6) throw Napi::RangeError::New(env, "at most 6 syscall arguments");
  uint64_t args[6] = {0, 0, 0, 0, 0, 0};
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (v.IsBigInt()) {
      bool lossless = false;
      args[i] = v.As<Napi::BigInt>().Uint64Value(&lossless);  // negative -> two's complement
    } else if (v.IsNumber()) {
      args[i] = static_cast<uint64_t>(v.As<Napi::Number>().Int64Value());
    } else {
      throw Napi::TypeError::New(env, "syscall arguments must be bigint or number");
    }
  }
  uint64_t gadget = ArgU64(info, 3, "gadget");
  bool use_trap = info.Length() > 4 && info[4].ToBoolean();
  int timeout = ArgTimeout(info, 5);
  inject::InjectResult r = inject::InjectSyscall(tid, nr, args, gadget, use_trap, timeout);
  if (r.err != 0) {
    std::string detail = TidDetail(tid) + " nr " + std::to_string(nr);
    if (r.unexpected_status != 0) {
      char b[16];
      snprintf(b, sizeof b, "%x", r.unexpected_status);
      detail += std::string(" wait status 0x") + b;
    }
    // The new task exists (stopped, traced by us) even though the call failed.
    if (r.child != 0) detail += " (created task " + std::to_string(r.child) + ")";
    ThrowErrno(env, r.err, r.what, detail);
  }
  return r;
}

// injectSyscall(tid, nr, args, gadget, useTrap, timeoutMs) -> bigint (signed rax)
Napi::Value InjectSyscall(const Napi::CallbackInfo& info) {
  inject::InjectResult r = InjectFromArgs(info);
  return Napi::BigInt::New(info.Env(), r.result);
}

// injectSyscallFork(same args) -> { result: bigint, child: number (0 = none) }
// For fork/clone/clone3 in a tracee with TRACEFORK/TRACECLONE: the new task
// is left in its initial stop for the caller to wait for.
Napi::Value InjectSyscallFork(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  inject::InjectResult r = InjectFromArgs(info);
  Napi::Object o = Napi::Object::New(env);
  o.Set("result", Napi::BigInt::New(env, r.result));
  o.Set("child", Napi::Number::New(env, r.child));
  return o;
}

// injectBatchBlob() -> Buffer: the batch routine's code (ptrace_util.h).
Napi::Value InjectBatchBlob(const Napi::CallbackInfo& info) {
  size_t len = 0;
  const uint8_t* b = inject::BatchBlob(&len);
  return Napi::Buffer<uint8_t>::Copy(info.Env(), b, len);
}

// injectBatch(tid, blobAddr, tableAddr, timeoutMs): runs the syscall table at
// tableAddr in the stopped tracee; the results are in the table.
Napi::Value InjectBatch(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int tid = ArgI32(info, 0, "tid");
  uint64_t blob = ArgU64(info, 1, "blobAddr");
  uint64_t table = ArgU64(info, 2, "tableAddr");
  int timeout = ArgTimeout(info, 3);
  inject::InjectResult r = inject::InjectBatch(tid, blob, table, timeout);
  if (r.err != 0) {
    std::string detail = TidDetail(tid);
    if (r.unexpected_status != 0) {
      char b[16];
      snprintf(b, sizeof b, "%x", r.unexpected_status);
      detail += std::string(" wait status 0x") + b;
    }
    ThrowErrno(env, r.err, r.what, detail);
  }
  return env.Undefined();
}

// One seccomp filter of a stopped tracee (index 0 = the oldest, as the
// kernel counts), as its struct sock_filter array; null once the index is
// past the last filter (ENOENT).
Napi::Value SeccompGetFilter(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t tid = ArgTid(info, 0);
  uint32_t index = static_cast<uint32_t>(ArgI32(info, 1, "index"));
  // BPF_MAXINSNS instructions of 8 bytes each.
  std::vector<uint8_t> buf(4096 * 8);
  long n = ptrace(static_cast<enum __ptrace_request>(PTRACE_SECCOMP_GET_FILTER), tid,
                  reinterpret_cast<void*>(static_cast<uintptr_t>(index)), buf.data());
  if (n < 0) {
    if (errno == ENOENT) return env.Null();
    ThrowErrno(env, errno, "ptrace(PTRACE_SECCOMP_GET_FILTER)", TidDetail(tid) + " filter " + std::to_string(index));
  }
  return Napi::Buffer<uint8_t>::Copy(env, buf.data(), static_cast<size_t>(n) * 8);
}

// The flags a filter was installed with (SECCOMP_GET_METADATA: LOG etc.);
// -1 when the kernel has no metadata support (EIO).
Napi::Value SeccompGetFlags(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  pid_t tid = ArgTid(info, 0);
  uint32_t index = static_cast<uint32_t>(ArgI32(info, 1, "index"));
  struct {
    uint64_t filter_off;
    uint64_t flags;
  } meta = {index, 0};
  if (ptrace(static_cast<enum __ptrace_request>(PTRACE_SECCOMP_GET_METADATA), tid,
             reinterpret_cast<void*>(sizeof(meta)), &meta) < 0) {
    if (errno == EIO) return Napi::Number::New(env, -1);
    ThrowErrno(env, errno, "ptrace(PTRACE_SECCOMP_GET_METADATA)", TidDetail(tid) + " filter " + std::to_string(index));
  }
  return Napi::Number::New(env, static_cast<double>(meta.flags));
}

}  // namespace

void InitInjectPtrace(Napi::Env env, Napi::Object exports) {
  exports.Set("ptraceSeize", Napi::Function::New(env, Seize, "ptraceSeize"));
  exports.Set("ptraceInterrupt", Napi::Function::New(env, Interrupt, "ptraceInterrupt"));
  exports.Set("ptraceCont", Napi::Function::New(env, Resume<PTRACE_CONT>, "ptraceCont"));
  exports.Set("ptraceSyscall", Napi::Function::New(env, Resume<PTRACE_SYSCALL>, "ptraceSyscall"));
  exports.Set("ptraceSingleStep", Napi::Function::New(env, Resume<PTRACE_SINGLESTEP>, "ptraceSingleStep"));
  exports.Set("ptraceDetach", Napi::Function::New(env, Resume<PTRACE_DETACH>, "ptraceDetach"));
  exports.Set("ptraceSetOptions", Napi::Function::New(env, SetOptions, "ptraceSetOptions"));
  exports.Set("ptraceGetEventMsg", Napi::Function::New(env, GetEventMsg, "ptraceGetEventMsg"));
  exports.Set("waitPid", Napi::Function::New(env, Wait, "waitPid"));
  exports.Set("ptraceGetRegs", Napi::Function::New(env, GetRegs, "ptraceGetRegs"));
  exports.Set("ptraceSetRegs", Napi::Function::New(env, SetRegs, "ptraceSetRegs"));
  exports.Set("ptraceGetRegset", Napi::Function::New(env, GetRegset, "ptraceGetRegset"));
  exports.Set("ptraceSetRegset", Napi::Function::New(env, SetRegset, "ptraceSetRegset"));
  exports.Set("ptraceGetSigmask", Napi::Function::New(env, GetSigmask, "ptraceGetSigmask"));
  exports.Set("ptraceSetSigmask", Napi::Function::New(env, SetSigmask, "ptraceSetSigmask"));
  exports.Set("ptraceGetRseqConfiguration",
              Napi::Function::New(env, GetRseqConfiguration, "ptraceGetRseqConfiguration"));
  exports.Set("ptracePeekSiginfo", Napi::Function::New(env, PeekSiginfo, "ptracePeekSiginfo"));
  exports.Set("ptraceSeccompGetFilter", Napi::Function::New(env, SeccompGetFilter, "ptraceSeccompGetFilter"));
  exports.Set("ptraceSeccompGetFlags", Napi::Function::New(env, SeccompGetFlags, "ptraceSeccompGetFlags"));
  exports.Set("getRobustList", Napi::Function::New(env, GetRobustList, "getRobustList"));
  exports.Set("injectSyscall", Napi::Function::New(env, InjectSyscall, "injectSyscall"));
  exports.Set("injectSyscallFork", Napi::Function::New(env, InjectSyscallFork, "injectSyscallFork"));
  exports.Set("injectBatchBlob", Napi::Function::New(env, InjectBatchBlob, "injectBatchBlob"));
  exports.Set("injectBatch", Napi::Function::New(env, InjectBatch, "injectBatch"));
}

}  // namespace lr
