#include "common/errors.h"

#include <string.h>

#include <cerrno>

namespace lr {

const char* ErrnoName(int err) {
  // strerrorname_np is glibc >= 2.32; Debian 12 has 2.36.
  const char* name = strerrorname_np(err);
  if (name != nullptr) return name;
  static thread_local char buf[24];
  snprintf(buf, sizeof(buf), "E%d", err);
  return buf;
}

std::string ErrnoMessage(int err, const char* syscall, const std::string& detail) {
  std::string msg = std::string(ErrnoName(err)) + ": " + strerror(err) + ", " + syscall;
  if (!detail.empty()) msg += " " + detail;
  return msg;
}

Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall,
                       const std::string& detail) {
  Napi::Error e = Napi::Error::New(env, ErrnoMessage(err, syscall, detail));
  e.Set("code", Napi::String::New(env, ErrnoName(err)));
  e.Set("errno", Napi::Number::New(env, err));
  e.Set("syscall", Napi::String::New(env, syscall));
  return e;
}

void ThrowErrno(Napi::Env env, int err, const char* syscall, const std::string& detail) {
  throw ErrnoError(env, err, syscall, detail);
}

uint64_t ArgU64(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Env env = info.Env();
  if (index >= info.Length()) throw Napi::TypeError::New(env, std::string(name) + " is required");
  Napi::Value v = info[index];
  if (v.IsBigInt()) {
    bool lossless = false;
    uint64_t r = v.As<Napi::BigInt>().Uint64Value(&lossless);
    if (!lossless) throw Napi::RangeError::New(env, std::string(name) + " does not fit in 64 bits");
    return r;
  }
  if (v.IsNumber()) {
    double d = v.As<Napi::Number>().DoubleValue();
    if (d < 0 || d > 9007199254740991.0 || d != static_cast<double>(static_cast<uint64_t>(d)))
      throw Napi::RangeError::New(env, std::string(name) + " must be a non-negative integer");
    return static_cast<uint64_t>(d);
  }
  throw Napi::TypeError::New(env, std::string(name) + " must be a bigint or number");
}

int64_t ArgI64(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Env env = info.Env();
  if (index >= info.Length()) throw Napi::TypeError::New(env, std::string(name) + " is required");
  Napi::Value v = info[index];
  if (v.IsBigInt()) {
    bool lossless = false;
    int64_t r = v.As<Napi::BigInt>().Int64Value(&lossless);
    if (!lossless) throw Napi::RangeError::New(env, std::string(name) + " does not fit in 64 bits");
    return r;
  }
  if (v.IsNumber()) return v.As<Napi::Number>().Int64Value();
  throw Napi::TypeError::New(env, std::string(name) + " must be a bigint or number");
}

int32_t ArgI32(const Napi::CallbackInfo& info, size_t index, const char* name) {
  Napi::Env env = info.Env();
  if (index >= info.Length() || !info[index].IsNumber())
    throw Napi::TypeError::New(env, std::string(name) + " must be a number");
  return info[index].As<Napi::Number>().Int32Value();
}

int ArgFd(const Napi::CallbackInfo& info, size_t index, const char* name) {
  int fd = ArgI32(info, index, name);
  if (fd < 0) throw Napi::RangeError::New(info.Env(), std::string(name) + " must be a file descriptor >= 0");
  return fd;
}

}  // namespace lr
