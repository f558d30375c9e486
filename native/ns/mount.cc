// native/ns: mount(2) and umount2(MNT_DETACH) for the file systems a command
// mounts for itself (a cgroup hierarchy not mounted in our namespace, which
// cgroup.img needs walked or restored), without starting mount(8).
#include <sys/mount.h>

#include <string>

#include "common/errors.h"
#include "common/modules.h"

namespace lr {
namespace {

std::string StringArg(const Napi::CallbackInfo& info, size_t i, const char* name) {
  if (!info[i].IsString()) throw Napi::TypeError::New(info.Env(), std::string(name) + " must be a string");
  return info[i].As<Napi::String>().Utf8Value();
}

// mountFs(source, target, fstype, data): mount(2) without flags; data may be "".
Napi::Value MountFs(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string source = StringArg(info, 0, "source");
  std::string target = StringArg(info, 1, "target");
  std::string fstype = StringArg(info, 2, "fstype");
  std::string data = StringArg(info, 3, "data");
  if (mount(source.c_str(), target.c_str(), fstype.c_str(), 0, data.empty() ? nullptr : data.c_str()) < 0) {
    ThrowErrno(env, errno, "mount", target);
  }
  return env.Undefined();
}

// umountDetach(target): umount2(target, MNT_DETACH).
Napi::Value UmountDetach(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  std::string target = StringArg(info, 0, "target");
  if (umount2(target.c_str(), MNT_DETACH) < 0) ThrowErrno(env, errno, "umount2", target);
  return env.Undefined();
}

}  // namespace

void InitMount(Napi::Env env, Napi::Object exports) {
  exports.Set("mountFs", Napi::Function::New(env, MountFs));
  exports.Set("umountDetach", Napi::Function::New(env, UmountDetach));
}

}  // namespace lr
