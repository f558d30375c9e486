// native/ns: reading files that show the namespace of the reader (the
// UTS names in /proc/sys/kernel, SysV IPC objects in /proc/sysvipc) as
// another process's namespace shows them, without starting nsenter: a
// short-lived thread joins the namespace with setns (allowed per thread for
// UTS, IPC and network namespaces), reads the files and exits, so the
// process's own threads never change namespace. Also mknod(2), which Node's
// fs lacks, for unpacking a container's tmpfs (device nodes, FIFOs).
#include <fcntl.h>
#include <sched.h>
#include <sys/stat.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <string>
#include <thread>
#include <vector>

#include "common/errors.h"
#include "common/modules.h"

namespace lr {
namespace {

constexpr size_t kMaxFile = 1 << 20;

struct NsKind { const char* name; int flag; };
constexpr NsKind kKinds[] = {{"uts", CLONE_NEWUTS}, {"ipc", CLONE_NEWIPC}, {"net", CLONE_NEWNET}};

struct ReadResult {
  int err = 0;
  const char* sys = nullptr;
  std::string what;
  std::vector<std::string> texts;
};

// Runs on its own thread: join the namespace, read each file whole.
void ReadIn(int nsFd, int flag, const std::vector<std::string>& paths, ReadResult* out) {
  if (setns(nsFd, flag) < 0) { out->err = errno; out->sys = "setns"; return; }
  for (const std::string& p : paths) {
    int fd = open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) { out->err = errno; out->sys = "open"; out->what = p; return; }
    std::string text;
    char buf[8192];
    for (;;) {
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) { out->err = errno; out->sys = "read"; out->what = p; close(fd); return; }
      if (n == 0) break;
      text.append(buf, static_cast<size_t>(n));
      if (text.size() > kMaxFile) { out->err = EFBIG; out->sys = "read"; out->what = p; close(fd); return; }
    }
    close(fd);
    out->texts.push_back(std::move(text));
  }
}

// nsReadFiles(pid, kind, paths): the files' contents as strings, read in
// pid's namespace of that kind ("uts", "ipc" or "net").
Napi::Value NsReadFiles(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int pid = ArgI32(info, 0, "pid");
  if (!info[1].IsString()) throw Napi::TypeError::New(env, "kind must be a string");
  if (!info[2].IsArray()) throw Napi::TypeError::New(env, "paths must be an array of strings");
  std::string kind = info[1].As<Napi::String>().Utf8Value();
  int flag = 0;
  for (const NsKind& k : kKinds) if (kind == k.name) flag = k.flag;
  if (flag == 0) throw Napi::RangeError::New(env, "kind must be uts, ipc or net");
  Napi::Array arr = info[2].As<Napi::Array>();
  std::vector<std::string> paths;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsString()) throw Napi::TypeError::New(env, "paths must be an array of strings");
    paths.push_back(v.As<Napi::String>().Utf8Value());
  }
  std::string nsPath = "/proc/" + std::to_string(pid) + "/ns/" + kind;
  int nsFd = open(nsPath.c_str(), O_RDONLY | O_CLOEXEC);
  if (nsFd < 0) ThrowErrno(env, errno, "open", nsPath);
  ReadResult res;
  try {
    std::thread t(ReadIn, nsFd, flag, std::cref(paths), &res);
    t.join();
  } catch (const std::system_error& e) {
    close(nsFd);
    ThrowErrno(env, e.code().value(), "thread", nsPath);
  }
  close(nsFd);
  if (res.err) ThrowErrno(env, res.err, res.sys, res.what.empty() ? nsPath : res.what + " in " + nsPath);
  Napi::Array out = Napi::Array::New(env, res.texts.size());
  for (size_t i = 0; i < res.texts.size(); i++) out.Set(static_cast<uint32_t>(i), Napi::String::New(env, res.texts[i]));
  return out;
}

// mknod(path, mode, major, minor): mode includes the file type (S_IFCHR, S_IFBLK, S_IFIFO).
Napi::Value Mknod(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (!info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
  std::string path = info[0].As<Napi::String>().Utf8Value();
  uint32_t mode = static_cast<uint32_t>(ArgU64(info, 1, "mode"));
  uint32_t major = static_cast<uint32_t>(ArgU64(info, 2, "major"));
  uint32_t minor = static_cast<uint32_t>(ArgU64(info, 3, "minor"));
  if (mknod(path.c_str(), mode, makedev(major, minor)) < 0) ThrowErrno(env, errno, "mknod", path);
  return env.Undefined();
}

}  // namespace

void InitNs(Napi::Env env, Napi::Object exports) {
  exports.Set("nsReadFiles", Napi::Function::New(env, NsReadFiles));
  exports.Set("mknod", Napi::Function::New(env, Mknod));
}

}  // namespace lr
