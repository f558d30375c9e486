// native/ns: reading files that show the namespace of the reader (the
// UTS names in /proc/sys/kernel, SysV IPC objects in /proc/sysvipc) as
// another process's namespace shows them, without starting nsenter: a
// short-lived thread joins the namespace with setns (allowed per thread for
// UTS, IPC and network namespaces), reads the files and exits, so the
// process's own threads never change namespace. nsRun does the same for
// a list of mount-namespace steps (mount, umount2, chdir, pivot_root,
// sethostname, setdomainname): the thread first unshares its fs struct
// (setns into a mount namespace needs a task that shares it with no one),
// so a container's mount tree is built without one ptrace round trip per
// call. The thread is RunInNamespaces (ns/ns_thread.h). Also mknod(2),
// which Node's fs lacks, for unpacking a container's tmpfs (device nodes,
// FIFOs).
#include <fcntl.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/sysmacros.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "common/errors.h"
#include "common/modules.h"
#include "ns/ns_thread.h"

namespace lr {
namespace {

constexpr size_t kMaxFile = 1 << 20;

// Reads each file whole (on the namespace thread); the first failure is stored in `f`.
void ReadFiles(const std::vector<std::string>& paths, const std::string& nsPath, std::vector<std::string>& texts, NsFailure& f) {
  for (const std::string& p : paths) {
    int fd = open(p.c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) { f = {errno, "open", p + " in " + nsPath}; return; }
    std::string text;
    char buf[8192];
    for (;;) {
      ssize_t n = read(fd, buf, sizeof(buf));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) { f = {errno, "read", p + " in " + nsPath}; close(fd); return; }
      if (n == 0) break;
      text.append(buf, static_cast<size_t>(n));
      if (text.size() > kMaxFile) { f = {EFBIG, "read", p + " in " + nsPath}; close(fd); return; }
    }
    close(fd);
    texts.push_back(std::move(text));
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
  if (NsKindFlag(kind) == 0) throw Napi::RangeError::New(env, "kind must be uts, ipc or net");
  Napi::Array arr = info[2].As<Napi::Array>();
  std::vector<std::string> paths;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsString()) throw Napi::TypeError::New(env, "paths must be an array of strings");
    paths.push_back(v.As<Napi::String>().Utf8Value());
  }
  NsFds ns;
  ns.Open(env, pid, kind);
  const std::string& nsPath = ns.joins().front().detail;
  std::vector<std::string> texts;
  ThrowIfFailed(env, RunInNamespaces(ns.joins(), NsFs::Shared, [&](NsFailure& f) { ReadFiles(paths, nsPath, texts, f); }));
  Napi::Array out = Napi::Array::New(env, texts.size());
  for (size_t i = 0; i < texts.size(); i++) out.Set(static_cast<uint32_t>(i), Napi::String::New(env, texts[i]));
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

enum class Sys { Mount, Umount2, Chdir, PivotRoot, SetHostname, SetDomainname };

struct Step {
  Sys sys;
  std::string what;
  std::string a, b, c, d;  // mount: source, target, fstype, data; others: path / name (a), put_old (b)
  bool hasA = false, hasC = false, hasD = false;
  unsigned long flags = 0;
};

// Runs the steps in order (on the namespace thread); the first failing one is stored in `f`.
void RunSteps(const std::vector<Step>& steps, NsFailure& f) {
  for (const Step& s : steps) {
    long r = 0;
    switch (s.sys) {
      case Sys::Mount:
        r = mount(s.hasA ? s.a.c_str() : nullptr, s.b.c_str(), s.hasC ? s.c.c_str() : nullptr, s.flags, s.hasD ? s.d.c_str() : nullptr);
        break;
      case Sys::Umount2: r = umount2(s.a.c_str(), static_cast<int>(s.flags)); break;
      case Sys::Chdir: r = chdir(s.a.c_str()); break;
      case Sys::PivotRoot: r = syscall(SYS_pivot_root, s.a.c_str(), s.b.c_str()); break;
      case Sys::SetHostname: r = sethostname(s.a.data(), s.a.size()); break;
      case Sys::SetDomainname: r = setdomainname(s.a.data(), s.a.size()); break;
    }
    if (r < 0) { f = {errno, s.what, std::string()}; return; }
  }
}

std::string StrField(Napi::Object o, const char* key, bool* has) {
  Napi::Value v = o.Get(key);
  if (v.IsString()) { if (has) *has = true; return v.As<Napi::String>().Utf8Value(); }
  if (has) *has = false;
  return std::string();
}

// nsRun(pid, kinds, steps): runs the steps in order on a thread that joined
// pid's namespaces of those kinds; throws at the first failing step (its
// `what` in the message) with that step's errno.
Napi::Value NsRun(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int pid = ArgI32(info, 0, "pid");
  if (!info[1].IsArray() || !info[2].IsArray()) throw Napi::TypeError::New(env, "kinds and steps must be arrays");
  Napi::Array kinds = info[1].As<Napi::Array>();
  Napi::Array arr = info[2].As<Napi::Array>();
  std::vector<Step> steps;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    Napi::Value v = arr.Get(i);
    if (!v.IsObject()) throw Napi::TypeError::New(env, "each step must be an object");
    Napi::Object o = v.As<Napi::Object>();
    Step s;
    std::string sys = StrField(o, "sys", nullptr);
    if (sys == "mount") s.sys = Sys::Mount;
    else if (sys == "umount2") s.sys = Sys::Umount2;
    else if (sys == "chdir") s.sys = Sys::Chdir;
    else if (sys == "pivot_root") s.sys = Sys::PivotRoot;
    else if (sys == "sethostname") s.sys = Sys::SetHostname;
    else if (sys == "setdomainname") s.sys = Sys::SetDomainname;
    else throw Napi::RangeError::New(env, "unknown step " + sys);
    s.what = StrField(o, "what", nullptr);
    s.a = StrField(o, "a", &s.hasA);
    bool hasB = false;
    s.b = StrField(o, "b", &hasB);
    s.c = StrField(o, "c", &s.hasC);
    s.d = StrField(o, "d", &s.hasD);
    Napi::Value f = o.Get("flags");
    if (f.IsNumber()) s.flags = static_cast<unsigned long>(f.As<Napi::Number>().Int64Value());
    if ((s.sys == Sys::Mount || s.sys == Sys::PivotRoot) && !hasB) throw Napi::TypeError::New(env, s.what + ": b is required");
    if (s.sys != Sys::Mount && !s.hasA) throw Napi::TypeError::New(env, s.what + ": a is required");
    steps.push_back(std::move(s));
  }
  NsFds ns;
  // The mount namespace last: the others' files are found through /proc, which stays ours.
  for (int pass = 0; pass < 2; pass++) {
    for (uint32_t i = 0; i < kinds.Length(); i++) {
      std::string k = kinds.Get(i).ToString().Utf8Value();
      if ((NsKindFlag(k) == CLONE_NEWNS) != (pass == 1)) continue;
      ns.Open(env, pid, k);
    }
  }
  NsFailure f = RunInNamespaces(ns.joins(), NsFs::Unshared, [&](NsFailure& ff) { RunSteps(steps, ff); });
  if (f.err) ThrowErrno(env, f.err, f.syscall.c_str(), "in the namespaces of pid " + std::to_string(pid));
  return env.Undefined();
}

}  // namespace

void InitNs(Napi::Env env, Napi::Object exports) {
  exports.Set("nsReadFiles", Napi::Function::New(env, NsReadFiles));
  exports.Set("mknod", Napi::Function::New(env, Mknod));
  exports.Set("nsRun", Napi::Function::New(env, NsRun));
}

}  // namespace lr
