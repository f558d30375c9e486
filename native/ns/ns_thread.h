// native/ns: running code inside another process's namespaces without
// moving Node's own threads. A thread of its own joins the namespaces
// (setns, after unshare(CLONE_FS) where a mount namespace needs it), runs
// the body and ends; the joined namespaces are left with it. Failures on
// that thread come back as an errno, a call name and a detail, and are
// thrown on the Node thread through common/errors.h.
#pragma once

#include <napi.h>

#include <functional>
#include <string>
#include <vector>

namespace lr {

// A failed step on a namespace thread (err 0: none).
struct NsFailure {
  int err = 0;
  std::string syscall;
  std::string detail;
};

// One namespace to join: an fd of /proc/PID/ns/KIND, its CLONE_NEW* flag,
// and what a setns failure names (the path, or the flag's name).
struct NsJoin {
  int fd = -1;
  int flag = 0;
  std::string detail;
};

// The CLONE_NEW* flag of a namespace kind as /proc/PID/ns names it
// ("uts", "ipc", "net", "mnt", "cgroup"); 0 for any other name.
int NsKindFlag(const std::string& kind);

// Namespaces of a process opened for joining, closed when this ends.
class NsFds {
 public:
  NsFds() = default;
  NsFds(const NsFds&) = delete;
  NsFds& operator=(const NsFds&) = delete;
  ~NsFds();
  // Opens /proc/PID/ns/KIND; throws RangeError for an unknown kind, the
  // open's errno (with the path) if it fails.
  void Open(Napi::Env env, int pid, const std::string& kind);
  const std::vector<NsJoin>& joins() const { return joins_; }

 private:
  std::vector<NsJoin> joins_;
};

// Whether the namespace thread keeps sharing the process's fs struct (root,
// cwd, umask) or unshares it first: setns into a mount namespace needs a
// thread that shares its fs struct with no one.
enum class NsFs { Shared, Unshared };

// Runs `body` on a thread of its own that first joins `joins` in order.
// The thread's stop is `body` returning: it is joined before this returns,
// never detached. The result is the first failure: the thread not starting
// (syscall "thread"), unshare or setns failing, or what `body` stored in its
// argument (which it should do, then return, at its first failing call).
NsFailure RunInNamespaces(const std::vector<NsJoin>& joins, NsFs fs, const std::function<void(NsFailure&)>& body);

// Throws the failure (ThrowErrno: code, errno, syscall, detail), if any.
void ThrowIfFailed(Napi::Env env, const NsFailure& f);

}  // namespace lr
