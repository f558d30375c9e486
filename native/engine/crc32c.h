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

// Three independent buffers of n bytes at once: the crc32 instruction has a
// latency of 3 cycles and a throughput of 1, so three chains run ~3x faster.
__attribute__((target("sse4.2"))) inline void Hw3(const uint8_t* a, const uint8_t* b, const uint8_t* c, size_t n,
                                                  uint32_t out[3]) {
  uint64_t x = ~0u, y = ~0u, z = ~0u;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t u, v, w;
    memcpy(&u, a + i, 8);
    memcpy(&v, b + i, 8);
    memcpy(&w, c + i, 8);
    x = __builtin_ia32_crc32di(x, u);
    y = __builtin_ia32_crc32di(y, v);
    z = __builtin_ia32_crc32di(z, w);
  }
  uint32_t x32 = static_cast<uint32_t>(x), y32 = static_cast<uint32_t>(y), z32 = static_cast<uint32_t>(z);
  for (; i < n; i++) {
    x32 = __builtin_ia32_crc32qi(x32, a[i]);
    y32 = __builtin_ia32_crc32qi(y32, b[i]);
    z32 = __builtin_ia32_crc32qi(z32, c[i]);
  }
  out[0] = ~x32;
  out[1] = ~y32;
  out[2] = ~z32;
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

// CRC32C of three buffers of n bytes each (independent checksums, interleaved).
inline void Crc32c3(const uint8_t* a, const uint8_t* b, const uint8_t* c, size_t n, uint32_t out[3]) {
#if defined(__x86_64__)
  static const bool hw = __builtin_cpu_supports("sse4.2");
  if (hw) return crc32c_detail::Hw3(a, b, c, n, out);
#endif
  out[0] = crc32c_detail::Soft(a, n);
  out[1] = crc32c_detail::Soft(b, n);
  out[2] = crc32c_detail::Soft(c, n);
}

}  // namespace lr::engine
