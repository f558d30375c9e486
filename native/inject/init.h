// Registration functions of the dump-owned native/inject files (init.cc
// calls them). The restore side registers its own in restore_init.cc.
#pragma once

#include <napi.h>

namespace lr {
void InitInjectPtrace(Napi::Env env, Napi::Object exports);  // ptrace.cc
void InitInjectMemory(Napi::Env env, Napi::Object exports);  // memory.cc
void InitInjectDumpMem(Napi::Env env, Napi::Object exports);  // dumpmem.cc
void InitInjectPageScan(Napi::Env env, Napi::Object exports);  // pagescan.cc (incremental dumps)
void InitInjectShmem(Napi::Env env, Napi::Object exports);  // shmem.cc (shared memory objects)
}  // namespace lr
