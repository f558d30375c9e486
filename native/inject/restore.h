// Restore-side native primitives (owner: restore work). Each restore_*.cc
// registers its functions from InitRestoreNative (restore_init.cc).
//
// Threading rule: ptrace requests must come from the thread that is the
// tracer. Every ptrace-using function here is synchronous and runs on the JS
// main thread, which is the tracer of every stub it spawns.
#pragma once

#include <napi.h>

namespace lr {
void InitRestorePtrace(Napi::Env env, Napi::Object exports);  // restore_ptrace.cc
void InitRestoreMem(Napi::Env env, Napi::Object exports);     // restore_mem.cc
void InitRestoreLazy(Napi::Env env, Napi::Object exports);    // restore_lazy.cc
void InitRestoreWaiter(Napi::Env env, Napi::Object exports);  // restore_waiter.cc
void InitFds(Napi::Env env, Napi::Object exports);            // fds.cc (dump and restore of fds)
}  // namespace lr
