// CRC32C (Castagnoli) for page checksum verification in the fault engine
// (issue 9). Same function as plugin/images/checksums.ts: reflected, initial
// value ~0, final complement. Uses the SSE4.2 crc32 instruction when the CPU
// has it (every x86_64 server of the last decade), a table otherwise.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

namespace lr::engine {

namespace crc32c_detail {

struct Table {
  uint32_t t[256];
  constexpr Table() : t() {
    for (uint32_t i = 0; i < 256; i++) {
      uint32_t c = i;
      for (int k = 0; k < 8; k++) c = c & 1 ? (c >> 1) ^ 0x82f63b78u : c >> 1;
      t[i] = c;
    }
  }
};

inline uint32_t Soft(const uint8_t* p, size_t n) {
  static constexpr Table tab;
  uint32_t c = ~0u;
  for (size_t i = 0; i < n; i++) c = tab.t[(c ^ p[i]) & 0xff] ^ (c >> 8);
  return ~c;
}

#if defined(__x86_64__)
__attribute__((target("sse4.2"))) inline uint32_t Hw(const uint8_t* p, size_t n) {
  uint64_t c = ~0u;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    memcpy(&v, p + i, 8);
    c = __builtin_ia32_crc32di(c, v);
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  for (; i < n; i++) c32 = __builtin_ia32_crc32qi(c32, p[i]);
  return ~c32;
}
#endif

}  // namespace crc32c_detail

inline uint32_t Crc32c(const uint8_t* p, size_t n) {
#if defined(__x86_64__)
  static const bool hw = __builtin_cpu_supports("sse4.2");
  if (hw) return crc32c_detail::Hw(p, n);
#endif
  return crc32c_detail::Soft(p, n);
}

}  // namespace lr::engine
