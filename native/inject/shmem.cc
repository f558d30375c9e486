// Shared memory objects (MAP_SHARED anonymous memory and memfds, both shmem
// files): which parts of a shmem file hold data (SEEK_DATA/SEEK_HOLE, so the
// dump skips pages never touched), memfd creation for the restorer, and the
// seals (fcntl F_GET_SEALS / F_ADD_SEALS), which Node cannot reach.
#include <errno.h>
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <string>
#include <vector>

#include "common/errors.h"
#include "inject/init.h"

namespace lr {
namespace {

// shmemDataRuns(fd, size): (offset, length) pairs of the data segments of a
// shmem file below `size`, page aligned, in order.
Napi::Value ShmemDataRuns(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  uint64_t size = ArgU64(info, 1, "size");
  std::vector<uint64_t> out;
  uint64_t pos = 0;
  while (pos < size) {
    off_t d = lseek(fd, static_cast<off_t>(pos), SEEK_DATA);
    if (d < 0) {
      if (errno == ENXIO) break;
      ThrowErrno(env, errno, "lseek", "SEEK_DATA fd " + std::to_string(fd));
    }
    uint64_t start = static_cast<uint64_t>(d) & ~uint64_t(4095);
    if (start >= size) break;
    off_t h = lseek(fd, d, SEEK_HOLE);
    if (h < 0) ThrowErrno(env, errno, "lseek", "SEEK_HOLE fd " + std::to_string(fd));
    uint64_t end = (static_cast<uint64_t>(h) + 4095) & ~uint64_t(4095);
    if (end > size) end = size;
    if (end <= start) break;
    out.push_back(start);
    out.push_back(end - start);
    pos = end;
  }
  Napi::BigUint64Array a = Napi::BigUint64Array::New(env, out.size());
  for (size_t i = 0; i < out.size(); i++) a[i] = out[i];
  return a;
}

// memfdCreate(name, flags): a memfd in this process (MFD_CLOEXEC is added).
Napi::Value MemfdCreate(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "name must be a string");
  std::string name = info[0].As<Napi::String>().Utf8Value();
  uint32_t flags = static_cast<uint32_t>(ArgU64(info, 1, "flags"));
  int fd = static_cast<int>(syscall(SYS_memfd_create, name.c_str(), flags | MFD_CLOEXEC));
  if (fd < 0) ThrowErrno(env, errno, "memfd_create", name);
  return Napi::Number::New(env, fd);
}

// memfdGetSeals(fd) / memfdAddSeals(fd, seals)
Napi::Value MemfdGetSeals(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  int r = fcntl(fd, F_GET_SEALS);
  if (r < 0) ThrowErrno(env, errno, "fcntl", "F_GET_SEALS fd " + std::to_string(fd));
  return Napi::Number::New(env, r);
}

Napi::Value MemfdAddSeals(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  int seals = ArgI32(info, 1, "seals");
  if (fcntl(fd, F_ADD_SEALS, seals) < 0) ThrowErrno(env, errno, "fcntl", "F_ADD_SEALS fd " + std::to_string(fd));
  return env.Undefined();
}

}  // namespace

void InitInjectShmem(Napi::Env env, Napi::Object exports) {
  exports.Set("shmemDataRuns", Napi::Function::New(env, ShmemDataRuns, "shmemDataRuns"));
  exports.Set("memfdCreate", Napi::Function::New(env, MemfdCreate, "memfdCreate"));
  exports.Set("memfdGetSeals", Napi::Function::New(env, MemfdGetSeals, "memfdGetSeals"));
  exports.Set("memfdAddSeals", Napi::Function::New(env, MemfdAddSeals, "memfdAddSeals"));
}

}  // namespace lr
