// Registers the lazy-pages socket listener (lazysock.cc) on the addon exports.
#pragma once

#include <napi.h>

namespace lr {
void InitLazySocket(Napi::Env env, Napi::Object exports);
}  // namespace lr
