// The fixed-size part of CRIU's page-server protocol that native code
// speaks (plugin/pageserver/protocol.ts is the full codec): a 32-byte
// header {u32 cmd, u32 pad, u64 nr_pages, u64 vaddr, u64 dst_id} in host
// order. A lazy GET (PS_IOV_GET) is answered by PS_IOV_ADD_F with PE_PRESENT,
// the same vaddr and dst_id and 1 <= M <= N pages of data. Shared by the
// engine's native link (remote_link.cc, the client) and the page server's
// responder (responder.cc).
#pragma once

#include <stddef.h>
#include <stdint.h>
#include <string.h>

namespace lr::pageserver {

constexpr uint32_t kCmdBits = 16;  // PS_CMD_BITS: flags above the command
constexpr uint32_t kIovAddF = 6;   // PS_IOV_ADD_F
constexpr uint32_t kIovGet = 7;    // PS_IOV_GET
constexpr uint32_t kPePresent = 1u << 2;  // PE_PRESENT
constexpr uint32_t kCmdGet = kIovGet;
constexpr uint32_t kCmdPresentReply = kIovAddF | (kPePresent << kCmdBits);
constexpr size_t kHeaderSize = 32;

struct Header {
  uint32_t cmd;
  uint64_t pages;
  uint64_t vaddr;
  uint64_t dstId;
};

inline void EncodeHeader(const Header& h, uint8_t out[kHeaderSize]) {
  memset(out, 0, kHeaderSize);
  memcpy(out, &h.cmd, 4);
  memcpy(out + 8, &h.pages, 8);
  memcpy(out + 16, &h.vaddr, 8);
  memcpy(out + 24, &h.dstId, 8);
}

inline Header DecodeHeader(const uint8_t in[kHeaderSize]) {
  Header h;
  memcpy(&h.cmd, in, 4);
  memcpy(&h.pages, in + 8, 8);
  memcpy(&h.vaddr, in + 16, 8);
  memcpy(&h.dstId, in + 24, 8);
  return h;
}

}  // namespace lr::pageserver
