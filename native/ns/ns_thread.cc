#include "ns/ns_thread.h"

#include <fcntl.h>
#include <sched.h>
#include <unistd.h>

#include <cerrno>
#include <system_error>
#include <thread>

#include "common/errors.h"

namespace lr {
namespace {

struct NsKind { const char* name; int flag; };
constexpr NsKind kKinds[] = {{"uts", CLONE_NEWUTS}, {"ipc", CLONE_NEWIPC}, {"net", CLONE_NEWNET}, {"mnt", CLONE_NEWNS}, {"cgroup", CLONE_NEWCGROUP}};

void JoinAndRun(const std::vector<NsJoin>& joins, NsFs fs, const std::function<void(NsFailure&)>& body, NsFailure& f) {
  if (fs == NsFs::Unshared && unshare(CLONE_FS) < 0) {
    f = {errno, "unshare(CLONE_FS)", std::string()};
    return;
  }
  for (const NsJoin& j : joins) {
    if (setns(j.fd, j.flag) < 0) {
      f = {errno, "setns", j.detail};
      return;
    }
  }
  body(f);
}

}  // namespace

int NsKindFlag(const std::string& kind) {
  for (const NsKind& k : kKinds) {
    if (kind == k.name) return k.flag;
  }
  return 0;
}

NsFds::~NsFds() {
  for (const NsJoin& j : joins_) close(j.fd);
}

void NsFds::Open(Napi::Env env, int pid, const std::string& kind) {
  int flag = NsKindFlag(kind);
  if (flag == 0) throw Napi::RangeError::New(env, "unknown namespace kind " + kind);
  std::string path = "/proc/" + std::to_string(pid) + "/ns/" + kind;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) ThrowErrno(env, errno, "open", path);
  joins_.push_back({fd, flag, path});
}

NsFailure RunInNamespaces(const std::vector<NsJoin>& joins, NsFs fs, const std::function<void(NsFailure&)>& body) {
  NsFailure f;
  try {
    std::thread t(JoinAndRun, std::cref(joins), fs, std::cref(body), std::ref(f));
    t.join();
  } catch (const std::system_error& e) {
    std::string what;
    for (const NsJoin& j : joins) what += (what.empty() ? "" : ", ") + j.detail;
    return {e.code().value(), "thread", what};
  }
  return f;
}

void ThrowIfFailed(Napi::Env env, const NsFailure& f) {
  if (f.err) ThrowErrno(env, f.err, f.syscall.c_str(), f.detail);
}

}  // namespace lr
