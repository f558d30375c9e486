// Page sources: pages files mapped read-only (UFFDIO_COPY reads straight
// from the mapping), their per-chunk CRC32C checksums (issue 9), and the
// one lookup every copy path uses to get checked source bytes.
#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <pthread.h>

#include <algorithm>
#include <system_error>

#include "engine/crc32c.h"
#include "engine/engine.h"
#include "engine/internal.h"

namespace lr::engine {

int Engine::AddSource(const std::string& path, uint32_t* id, uint64_t* size, const char** what,
                      std::vector<uint32_t>&& sums, uint64_t chunk) {
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) { *what = "open"; return -errno; }
  struct stat st;
  if (fstat(fd, &st) < 0) { int e = errno; close(fd); *what = "fstat"; return -e; }
  if (!S_ISREG(st.st_mode)) { close(fd); *what = "open"; return -EINVAL; }
  auto s = std::make_unique<Source>();
  s->path = path;
  s->fileSize = static_cast<uint64_t>(st.st_size);
  s->size = (s->fileSize + kPage - 1) & ~(kPage - 1);
  if (!sums.empty()) {
    // The checksums must describe exactly this file (TS checks first and names the images).
    if (chunk == 0 || chunk % kPage || sums.size() != (s->fileSize + chunk - 1) / chunk) {
      close(fd);
      *what = "addSource (checksums do not match the file size)";
      return -EINVAL;
    }
    s->sums = std::move(sums);
    s->chunk = chunk;
    size_t words = (s->sums.size() + 63) / 64;
    s->verified = std::make_unique<std::atomic<uint64_t>[]>(words);
    for (size_t i = 0; i < words; i++) s->verified[i].store(0, std::memory_order_relaxed);
  }
  if (s->size > 0) {
    // UFFDIO_COPY reads straight from this mapping inside the kernel; if the
    // file shrinks later the copy fails with EFAULT (no SIGBUS in kernel mode).
    void* m = mmap(nullptr, s->size, PROT_READ, MAP_SHARED, fd, 0);
    if (m == MAP_FAILED) { int e = errno; close(fd); *what = "mmap"; return -e; }
    s->base = static_cast<const uint8_t*>(m);
  }
  close(fd);
  std::lock_guard<std::mutex> g(srcMu_);
  *id = static_cast<uint32_t>(sources_.size());
  *size = s->size;
  sources_.push_back(std::move(s));
  return 0;
}

const Source* Engine::GetSource(uint32_t id) {
  std::lock_guard<std::mutex> g(srcMu_);
  return id < sources_.size() ? sources_[id].get() : nullptr;
}

// The bytes for [at, at + len) of the lazy range that starts at `start`
// with span `sp`, checked before first use. *src is nullptr for zero and
// remote spans (nothing to read here). false = the process failed (no
// mapped source, or a checksum mismatch): nothing may be served.
bool Engine::SourceBytes(Proc* p, uint64_t start, const Span& sp, uint64_t at, uint64_t len, const uint8_t** src) {
  *src = nullptr;
  if (sp.kind != kFile) return true;
  const Source* s = GetSource(sp.source);
  if (s == nullptr || s->base == nullptr) {
    Fail(p, EINVAL, "ioctl(UFFDIO_COPY)", "range " + Hex(start) + " has no mapped source");
    return false;
  }
  *src = s->base + sp.off + (at - start);
  return Verify(p, sp.source, sp.off + (at - start), len);
}

// Checks every chunk of source bytes [off, off+len) not verified before. A
// mismatch fails the process (never served: it stays blocked until the
// daemon kills it). Two workers may verify the same chunk at once: harmless.
bool Engine::Verify(Proc* p, uint32_t source, uint64_t off, uint64_t len) {
  const Source* src = GetSource(source);
  if (src == nullptr || src->sums.empty() || len == 0) return true;
  const uint64_t first = off / src->chunk, last = (off + len - 1) / src->chunk;
  for (uint64_t i = first; i <= last && i < src->sums.size(); i++) {
    uint32_t got = 0;
    if (!CheckChunk(src, i, &got)) {
      char b[64];
      snprintf(b, sizeof(b), "(stored 0x%08x, computed 0x%08x)", src->sums[i], got);
      Fail(p, EBADMSG, "verify", src->path + " at offset " + std::to_string(i * src->chunk) +
                                     ": CRC32C mismatch in chunk " + std::to_string(i) + " " + b);
      return false;
    }
  }
  return true;
}

bool Engine::CheckChunk(const Source* src, uint64_t i, uint32_t* got) {
  std::atomic<uint64_t>& word = src->verified[i / 64];
  const uint64_t bit = 1ull << (i % 64);
  if (word.load(std::memory_order_acquire) & bit) return true;
  const uint64_t at = i * src->chunk;
  const uint64_t n = std::min(src->chunk, src->fileSize - at);
  *got = Crc32c(src->base + at, n);
  if (*got != src->sums[i]) return false;
  word.fetch_or(bit, std::memory_order_release);
  return true;
}

int Engine::VerifyAhead(uint32_t source, std::vector<std::pair<uint64_t, uint64_t>>&& spans) {
  const Source* src = GetSource(source);
  if (src == nullptr) return -ENOENT;
  if (src->sums.empty() || src->base == nullptr || spans.empty()) return 0;
  std::lock_guard<std::mutex> g(aheadMu_);
  if (stop_) return -ESHUTDOWN;
  try {
    ahead_.emplace_back([this, src, spans = std::move(spans)] {
      pthread_setname_np(pthread_self(), "lr-verify");
      for (const auto& [off, len] : spans) {
        if (len == 0 || off >= src->fileSize) continue;
        const uint64_t first = off / src->chunk, last = (std::min(off + len, src->fileSize) - 1) / src->chunk;
        for (uint64_t i = first; i <= last; i++) {
          if (stop_) return;  // Stop() unmaps the sources once this thread is joined
          uint32_t got;
          CheckChunk(src, i, &got);  // a mismatch stays unchecked: the serving path fails its process
        }
      }
    });
  } catch (const std::system_error& e) {
    return -e.code().value();
  }
  return 0;
}

}  // namespace lr::engine
