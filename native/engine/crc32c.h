// CRC32C (Castagnoli) for page checksum verification in the fault engine
// (issue 9). Same function as plugin/images/checksums.ts: reflected, initial
// value ~0, final complement. Uses the SSE4.2 crc32 instruction when the CPU
// has it (every x86_64 server of the last decade), a table otherwise.
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <map>
#include <memory>
#include <mutex>

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
// Runs three registers over three spans of m bytes each (m a multiple of 8)
// at once: the crc32 instruction has a latency of 3 cycles and a throughput
// of 1, so three chains run ~3x faster than one.
__attribute__((target("sse4.2"))) inline void Run3(uint64_t& x, uint64_t& y, uint64_t& z, const uint8_t* a,
                                                   const uint8_t* b, const uint8_t* c, size_t m) {
  for (size_t i = 0; i < m; i += 8) {
    uint64_t u, v, w;
    memcpy(&u, a + i, 8);
    memcpy(&v, b + i, 8);
    memcpy(&w, c + i, 8);
    x = __builtin_ia32_crc32di(x, u);
    y = __builtin_ia32_crc32di(y, v);
    z = __builtin_ia32_crc32di(z, w);
  }
}

// The CRC32C register after running n bytes at p from register reg (no inversions).
__attribute__((target("sse4.2"))) inline uint32_t RawHw(uint32_t reg, const uint8_t* p, size_t n) {
  uint64_t c = reg;
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v;
    memcpy(&v, p + i, 8);
    c = __builtin_ia32_crc32di(c, v);
  }
  uint32_t c32 = static_cast<uint32_t>(c);
  for (; i < n; i++) c32 = __builtin_ia32_crc32qi(c32, p[i]);
  return c32;
}

// CRC32C of n bytes at p (RawHw from ~0, inverted).
__attribute__((target("sse4.2"))) inline uint32_t Hw(const uint8_t* p, size_t n) { return ~RawHw(~0u, p, n); }

// CRC32C of three independent buffers of n bytes each, at once.
__attribute__((target("sse4.2"))) inline void Hw3(const uint8_t* a, const uint8_t* b, const uint8_t* c, size_t n,
                                                  uint32_t out[3]) {
  uint64_t x = ~0u, y = ~0u, z = ~0u;
  const size_t m = n & ~size_t{7};
  Run3(x, y, z, a, b, c, m);
  out[0] = ~RawHw(static_cast<uint32_t>(x), a + m, n - m);
  out[1] = ~RawHw(static_cast<uint32_t>(y), b + m, n - m);
  out[2] = ~RawHw(static_cast<uint32_t>(z), c + m, n - m);
}

// One buffer in three interleaved chains (the crc32 instruction's latency is
// 3 cycles, its throughput 1): parts A, B (m bytes each) and C (the rest) are
// run at once, A from ~0 and B, C from 0, then joined. The register is linear
// over GF(2): running k more bytes from register r gives Z_k(r) ^ (the same
// bytes from 0), where Z_k (k zero bytes) is a 32x32 bit matrix, kept as the
// images of the 32 unit vectors. So reg(A|B|C) = Z_{n-m}(rA) ^ Z_{n-2m}(rB) ^ rC.
struct ZeroShift {
  uint32_t img[32];
  __attribute__((target("sse4.2"))) explicit ZeroShift(size_t k) {
    for (int b = 0; b < 32; b++) {
      uint64_t c = 1u << b;
      for (size_t i = 0; i < k / 8; i++) c = __builtin_ia32_crc32di(c, 0);
      uint32_t c32 = static_cast<uint32_t>(c);
      for (size_t i = 0; i < k % 8; i++) c32 = __builtin_ia32_crc32qi(c32, 0);
      img[b] = c32;
    }
  }
  uint32_t Apply(uint32_t r) const {
    uint32_t out = 0;
    for (int b = 0; b < 32; b++)
      if (r & (1u << b)) out ^= img[b];
    return out;
  }
};

struct Split3 {
  size_t m;
  ZeroShift afterA, afterB;
  bool ok = false;
  explicit Split3(size_t n) : m((n / 3) & ~size_t{7}), afterA(n - m), afterB(n - 2 * m) {}
};

__attribute__((target("sse4.2"))) inline uint32_t Hw1x3(const Split3& s, const uint8_t* p, size_t n) {
  const uint8_t* a = p;
  const uint8_t* b = p + s.m;
  const uint8_t* c = p + 2 * s.m;
  uint64_t x = ~0u, y = 0, z = 0;
  Run3(x, y, z, a, b, c, s.m);
  uint32_t rc = RawHw(static_cast<uint32_t>(z), c + s.m, n - 3 * s.m);
  return ~(s.afterA.Apply(static_cast<uint32_t>(x)) ^ s.afterB.Apply(static_cast<uint32_t>(y)) ^ rc);
}

// The split for n bytes, made once per size (checked against one chain on a
// test buffer when made: a split that disagrees is never used).
inline const Split3* SplitFor(size_t n) {
  static std::mutex mu;
  static std::map<size_t, std::unique_ptr<Split3>> splits;
  std::lock_guard<std::mutex> g(mu);
  auto it = splits.find(n);
  if (it != splits.end()) return it->second->ok ? it->second.get() : nullptr;
  auto s = std::make_unique<Split3>(n);
  std::unique_ptr<uint8_t[]> t(new uint8_t[n]);
  uint64_t v = 0x9E3779B97F4A7C15ull;
  for (size_t i = 0; i < n; i++) {
    v ^= v << 13, v ^= v >> 7, v ^= v << 17;
    t[i] = static_cast<uint8_t>(v);
  }
  s->ok = Hw1x3(*s, t.get(), n) == Hw(t.get(), n);
  const Split3* out = s->ok ? s.get() : nullptr;
  splits.emplace(n, std::move(s));
  return out;
}
#endif

}  // namespace crc32c_detail

inline uint32_t Crc32c(const uint8_t* p, size_t n) {
#if defined(__x86_64__)
  static const bool hw = __builtin_cpu_supports("sse4.2");
  if (hw) {
    // Three chains for a chunk-sized buffer (the engine verifies 64 KiB chunks, one per first use).
    if (n >= 16 * 1024) {
      if (const crc32c_detail::Split3* s = crc32c_detail::SplitFor(n)) return crc32c_detail::Hw1x3(*s, p, n);
    }
    return crc32c_detail::Hw(p, n);
  }
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
