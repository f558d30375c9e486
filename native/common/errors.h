// The one place where a failed system call becomes a JavaScript error.
// Every native error carries `code` (the errno name, e.g. "EPERM"), `errno`
// (the positive number) and `syscall` (what failed), like Node's own
// system errors, so TypeScript can branch on err.code.
#pragma once

#include <napi.h>

#include <string>

namespace lr {

// Returns the symbolic errno name ("EAGAIN"), or "E<number>" if unknown.
const char* ErrnoName(int err);

// The message every native errno error carries: "EPERM: Operation not
// permitted, syscall detail" (also for errors that travel as engine events).
std::string ErrnoMessage(int err, const char* syscall, const std::string& detail = std::string());

// Builds an Error with code/errno/syscall set. `detail` is appended to the
// message when given (e.g. the address range or fd involved).
Napi::Error ErrnoError(Napi::Env env, int err, const char* syscall,
                       const std::string& detail = std::string());

// Throws ErrnoError as a JS exception (NAPI_CPP_EXCEPTIONS is on).
[[noreturn]] void ThrowErrno(Napi::Env env, int err, const char* syscall,
                             const std::string& detail = std::string());

// Argument checking helpers: throw TypeError/RangeError with the argument name.
uint64_t ArgU64(const Napi::CallbackInfo& info, size_t index, const char* name);
int64_t ArgI64(const Napi::CallbackInfo& info, size_t index, const char* name);
int32_t ArgI32(const Napi::CallbackInfo& info, size_t index, const char* name);
int ArgFd(const Napi::CallbackInfo& info, size_t index, const char* name);

}  // namespace lr
