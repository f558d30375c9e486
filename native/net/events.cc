// Native pieces for event objects and file handles:
//   kcmpEpollTfd(pid, fd, epfd, tfd, toff)  kcmp(KCMP_EPOLL_TFD): is the file
//       at `fd` in `pid` the one `epfd` (in pid) watches as (tfd, toff)?
//       0 same, 1/2 ordered, 3 different; throws ENOENT-like errnos as such.
//   openByHandle(mountFd, type, handle)     open_by_handle_at(O_PATH) of an
//       inotify watch's file handle (from fdinfo), for its path.
#include <napi.h>

#include <fcntl.h>
#include <linux/kcmp.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <string>
#include <vector>

#include "common/errors.h"
#include "common/modules.h"

namespace lr {
namespace {

Napi::Value KcmpEpollTfd(const Napi::CallbackInfo& info) {
  int pid = ArgI32(info, 0, "pid");
  int fd = ArgI32(info, 1, "fd");
  struct kcmp_epoll_slot slot {};
  slot.efd = static_cast<__u32>(ArgI32(info, 2, "epfd"));
  slot.tfd = static_cast<__u32>(ArgI32(info, 3, "tfd"));
  slot.toff = static_cast<__u32>(ArgI32(info, 4, "toff"));
  long r = syscall(SYS_kcmp, pid, pid, KCMP_EPOLL_TFD, fd, reinterpret_cast<unsigned long>(&slot));
  if (r < 0) ThrowErrno(info.Env(), errno, "kcmp", "KCMP_EPOLL_TFD pid " + std::to_string(pid) + " fd " + std::to_string(fd));
  return Napi::Number::New(info.Env(), static_cast<double>(r));
}

Napi::Value OpenByHandle(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int mountFd = ArgFd(info, 0, "mountFd");
  int type = ArgI32(info, 1, "type");
  if (info.Length() < 3 || !info[2].IsBuffer()) throw Napi::TypeError::New(env, "handle must be a Buffer");
  auto h = info[2].As<Napi::Buffer<uint8_t>>();
  std::vector<uint8_t> buf(sizeof(struct file_handle) + h.Length());
  auto* fh = reinterpret_cast<struct file_handle*>(buf.data());
  fh->handle_bytes = static_cast<unsigned>(h.Length());
  fh->handle_type = type;
  memcpy(fh->f_handle, h.Data(), h.Length());
  int fd = open_by_handle_at(mountFd, fh, O_PATH | O_CLOEXEC);
  if (fd < 0) ThrowErrno(env, errno, "open_by_handle_at");
  return Napi::Number::New(env, fd);
}

}  // namespace

void InitEvents(Napi::Env env, Napi::Object exports) {
  exports.Set("kcmpEpollTfd", Napi::Function::New(env, KcmpEpollTfd, "kcmpEpollTfd"));
  exports.Set("openByHandle", Napi::Function::New(env, OpenByHandle, "openByHandle"));
}

}  // namespace lr
