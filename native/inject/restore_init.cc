// Registers the restore-side primitives of native/inject.
#include "common/modules.h"
#include "inject/restore.h"

namespace lr {
void InitRestoreNative(Napi::Env env, Napi::Object exports) {
  InitRestorePtrace(env, exports);
  InitRestoreMem(env, exports);
  InitRestoreLazy(env, exports);
  InitRestoreWaiter(env, exports);
  InitFds(env, exports);
}
}  // namespace lr
