#include <napi.h>

#include "common/modules.h"

namespace {
Napi::Object Init(Napi::Env env, Napi::Object exports) {
  lr::InitUffd(env, exports);
  lr::InitEngine(env, exports);
  lr::InitInject(env, exports);
  lr::InitRestoreNative(env, exports);
  lr::InitRpc(env, exports);
  lr::InitNet(env, exports);
  lr::InitEvents(env, exports);
  lr::InitUnix(env, exports);
  lr::InitSysvIpc(env, exports);
  lr::InitNs(env, exports);
  lr::InitMount(env, exports);
  return exports;
}
}  // namespace

NODE_API_MODULE(lazy_restore, Init)
