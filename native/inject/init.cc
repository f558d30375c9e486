// native/inject: ptrace, single-syscall injection and remote memory access,
// shared by dump and restore. This file only wires the parts together.
#include "common/modules.h"
#include "inject/init.h"

namespace lr {
void InitInject(Napi::Env env, Napi::Object exports) {
  InitInjectPtrace(env, exports);
  InitInjectMemory(env, exports);
  InitInjectDumpMem(env, exports);
  InitInjectPageScan(env, exports);
  InitInjectShmem(env, exports);
}
}  // namespace lr
