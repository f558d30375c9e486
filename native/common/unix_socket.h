// AF_UNIX socket plumbing shared by every area that passes file descriptors
// (SCM_RIGHTS) or listens on a path: the lazy-pages socket (native/uffd),
// CRIU's RPC socket (native/rpc), the restore side (native/inject). No
// Node-API here: callers turn errors into JS errors (common/errors.h).
#pragma once

#include <stddef.h>
#include <sys/types.h>

#include <string>
#include <vector>

namespace lr {

// Most descriptors RecvWithFds takes from one message.
constexpr size_t kMaxRecvFds = 64;

// A listening AF_UNIX socket of `type` (SOCK_STREAM, SOCK_SEQPACKET) bound
// to `path`, CLOEXEC. The fd, or -errno with *what naming the failed call.
int ListenUnix(const std::string& path, int type, const char** what);

// Waits until fd is readable: 0, -ETIMEDOUT, -EBADF (not open), or -errno
// of poll(). timeoutMs -1 waits forever; EINTR is retried.
int WaitReadable(int fd, int timeoutMs);

// One sendmsg of `len` bytes with `nfds` descriptors attached in SCM_RIGHTS
// (none: no control data). Bytes sent, or -1 with errno; EINTR is retried.
// MSG_NOSIGNAL is always added to `flags`.
ssize_t SendWithFds(int sock, const void* data, size_t len, const int* fds, size_t nfds, int flags);

// One recvmsg into buf with room for maxFds (<= kMaxRecvFds) descriptors;
// MSG_CMSG_CLOEXEC is always added to `flags`. Every descriptor that
// arrived is appended to *fds (the caller's to pass on or close, even when
// the call reports an error through *msgFlags, e.g. MSG_CTRUNC). Bytes
// received, or -1 with errno; EINTR is retried.
ssize_t RecvWithFds(int sock, void* buf, size_t len, int flags, size_t maxFds, std::vector<int>* fds,
                    int* msgFlags = nullptr);

}  // namespace lr
