#include "common/modules.h"

namespace lr {
// Placeholder: the engine area registers its functions here.
void InitEngine(Napi::Env env, Napi::Object exports) { (void)env; (void)exports; }
}  // namespace lr
