// Addresses and offsets in error messages: "0x7f12a000".
#pragma once

#include <stdint.h>
#include <stdio.h>

#include <string>

namespace lr {

inline std::string Hex(uint64_t v) {
  char b[24];
  snprintf(b, sizeof(b), "0x%llx", static_cast<unsigned long long>(v));
  return b;
}

}  // namespace lr
