// Waits for a restored root process to exit without blocking the JS thread:
// one native thread per waiter polls the process's pidfd together with an
// eventfd used to stop it (flag, wake, join), reaps the child with waitid
// (P_PIDFD) and reports { code, signal } through a thread-safe function.
#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <sys/eventfd.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include <atomic>
#include <string>
#include <thread>

#include "common/errors.h"
#include "inject/restore.h"

#ifndef P_PIDFD
#define P_PIDFD 3
#endif

namespace lr {
namespace {

struct ExitInfo {
  int code;    // exit code, or -1
  int signal;  // terminating signal, or 0
  int err;     // errno when waiting failed
};

class ChildWaiter : public Napi::ObjectWrap<ChildWaiter> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "RestoreChildWaiter", {InstanceMethod("close", &ChildWaiter::Close)});
  }

  explicit ChildWaiter(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ChildWaiter>(info) {
    Napi::Env env = info.Env();
    pid_ = ArgI32(info, 0, "pid");
    if (!info[1].IsFunction()) throw Napi::TypeError::New(env, "onExit must be a function");
    pidfd_ = static_cast<int>(syscall(SYS_pidfd_open, pid_, 0));
    if (pidfd_ < 0) ThrowErrno(env, errno, "pidfd_open", "(pid " + std::to_string(pid_) + ")");
    wake_ = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
    if (wake_ < 0) {
      int e = errno;
      close(pidfd_);
      ThrowErrno(env, e, "eventfd");
    }
    tsfn_ = Napi::ThreadSafeFunction::New(env, info[1].As<Napi::Function>(), "restore-child-waiter", 0, 1);
    thread_ = std::thread([this] { Run(); });
  }

  ~ChildWaiter() override { Stop(); }

 private:
  void Run() {
    pollfd p[2] = {{pidfd_, POLLIN, 0}, {wake_, POLLIN, 0}};
    for (;;) {
      int r = poll(p, 2, -1);
      if (r < 0 && errno == EINTR) continue;
      if (stop_.load()) return;
      if (r < 0) return Report({-1, 0, errno});
      if (p[0].revents) break;
    }
    siginfo_t si{};
    int r;
    do r = waitid(static_cast<idtype_t>(P_PIDFD), static_cast<id_t>(pidfd_), &si, WEXITED);
    while (r < 0 && errno == EINTR);
    if (r < 0) return Report({-1, 0, errno});
    if (si.si_code == CLD_EXITED) return Report({si.si_status, 0, 0});
    Report({-1, si.si_status, 0});
  }

  void Report(ExitInfo ei) {
    tsfn_.BlockingCall([ei](Napi::Env env, Napi::Function cb) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("code", ei.code);
      o.Set("signal", ei.signal);
      if (ei.err) o.Set("error", ErrnoError(env, ei.err, "waitid").Value());
      cb.Call({o});
    });
  }

  void Stop() {
    if (stopped_) return;
    stopped_ = true;
    stop_.store(true);
    uint64_t one = 1;
    (void)!write(wake_, &one, sizeof(one));
    if (thread_.joinable()) thread_.join();
    tsfn_.Release();
    close(wake_);
    close(pidfd_);
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Stop();
    return info.Env().Undefined();
  }

  int pid_ = -1;
  int pidfd_ = -1;
  int wake_ = -1;
  bool stopped_ = false;
  std::atomic<bool> stop_{false};
  Napi::ThreadSafeFunction tsfn_;
  std::thread thread_;
};

}  // namespace

void InitRestoreWaiter(Napi::Env env, Napi::Object exports) {
  exports.Set("RestoreChildWaiter", ChildWaiter::Define(env));
}

}  // namespace lr
