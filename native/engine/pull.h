// A native bulk pull of one process's remote pages (post-copy background
// transfer): a thread of its own streams large GETs over a dedicated
// page-server connection and copies each reply into the process with
// UFFDIO_COPY, with no JavaScript hop. The Engine methods that drive it are
// in pull.cc.
#pragma once

#include <stdint.h>

#include <atomic>
#include <deque>
#include <memory>
#include <thread>

namespace lr::engine {

struct Proc;

struct Pull {
  // A GET on the stream, not answered yet (replies come in this order).
  struct Get {
    uint64_t addr;       // run-time address of its first page when it was sent
    uint64_t imageAddr;  // dump-time address sent in the GET
    uint64_t pages;
    uint64_t remaps;     // Proc::remaps when it was sent
  };
  uint32_t id = 0;
  std::shared_ptr<Proc> proc;
  int fd = -1;      // the engine's own duplicate of the connected socket
  int stopfd = -1;  // eventfd: StopPull / Engine::Stop
  std::atomic<bool> stop{false};
  std::thread th;
  uint64_t getPages = 256;     // pages per GET
  uint64_t windowPages = 2048; // pages requested and not answered, at most
  uint64_t stallNs = 0;        // no byte for this long with GETs out: the stream failed
  // Thread-only state.
  std::deque<Get> out;
  uint64_t outPages = 0;
  bool stuck = false;        // a whole pass saw nothing placed (Proc::pull is the pass state)
  std::atomic<uint64_t> pages{0}, gets{0};  // pages copied, GETs sent
};

}  // namespace lr::engine
