// A worker's native page-server link (CRIU page-server protocol, lazy GETs;
// the wire format is in pageserver_wire.h). The worker that reads a remote
// fault writes the GET and reads the reply itself, with no JavaScript hop.
// The Engine methods that drive it are in remote_link.cc.
#pragma once

#include <stddef.h>
#include <stdint.h>

#include <deque>
#include <mutex>
#include <vector>

#include "engine/pageserver_wire.h"

namespace lr::engine {

// A GET sent on a native page-server link and not answered yet.
struct RemoteGet {
  uint32_t proc;
  int32_t pid;
  uint64_t addr;       // run-time address of the first page (as requested)
  uint64_t imageAddr;  // dump-time address sent in the GET
  uint64_t pages;
  uint64_t t0;  // when the fault was read (service time)
};

// A connected page-server socket owned by one worker. Replies come strictly
// in request order (FIFO `out`). Any error, stall or malformed reply fails
// the link: its unanswered GETs become 'need' events (the JS path) and a
// 'link-error' event asks TypeScript for a fresh socket. Guarded by `mu`;
// lock order Proc::mu -> RemoteLink::mu -> the event queue (a reply is
// handed to the process only after `mu` is released).
struct RemoteLink {
  std::mutex mu;
  int fd = -1;
  std::deque<RemoteGet> out;
  // Reply being assembled: header bytes, then `data` (M pages).
  uint8_t hdr[pageserver::kHeaderSize];
  size_t hdrGot = 0;
  std::vector<uint8_t> data;
  size_t dataGot = 0;
  bool inData = false;
  std::vector<uint8_t> stage;  // receive buffer for small replies
  uint64_t lastNs = 0;      // last progress (byte received, or first GET sent on an idle link)
  uint64_t lastSendNs = 0;  // busy-poll for the reply until lastSendNs + spinNs
  uint64_t stallNs = 0;
  uint64_t spinNs = 0;
  // Counters (cumulative over every socket attached to this slot).
  uint64_t gets = 0, pages = 0, shortReplies = 0, failures = 0, attached = 0;
};

struct LinkStats {
  bool attached;
  uint64_t outstanding, gets, pages, shortReplies, failures, attaches;
};

}  // namespace lr::engine
