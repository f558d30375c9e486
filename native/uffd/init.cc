#include "common/modules.h"

namespace lr {
// Placeholder: the uffd area registers its functions here.
void InitUffd(Napi::Env env, Napi::Object exports) { (void)env; (void)exports; }
}  // namespace lr
