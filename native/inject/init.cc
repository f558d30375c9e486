#include "common/modules.h"

namespace lr {
// Placeholder: the inject area registers its functions here.
void InitInject(Napi::Env env, Napi::Object exports) { (void)env; (void)exports; }
}  // namespace lr
