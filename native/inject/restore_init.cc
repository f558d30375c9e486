#include "common/modules.h"

namespace lr {
// Placeholder: the restore side of native/inject registers its functions here.
void InitRestoreNative(Napi::Env env, Napi::Object exports) { (void)env; (void)exports; }
}  // namespace lr
