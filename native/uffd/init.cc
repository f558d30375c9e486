#include "common/modules.h"
#include "uffd/lazysock.h"

namespace lr {
// Placeholder: the uffd area registers its functions here.
void InitUffd(Napi::Env env, Napi::Object exports) {
  InitLazySocket(env, exports);  // plugin/lazy: CRIU lazy-pages socket (lazysock.cc)
}
}  // namespace lr
