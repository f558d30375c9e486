#include "common/unix_socket.h"

#include <errno.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>

namespace lr {

int ListenUnix(const std::string& path, int type, const char** what) {
  struct sockaddr_un sa{};
  *what = "bind";
  if (path.size() >= sizeof(sa.sun_path)) return -ENAMETOOLONG;
  sa.sun_family = AF_UNIX;
  memcpy(sa.sun_path, path.c_str(), path.size() + 1);
  int fd = socket(AF_UNIX, type | SOCK_CLOEXEC, 0);
  if (fd < 0) {
    *what = "socket";
    return -errno;
  }
  if (bind(fd, reinterpret_cast<sockaddr*>(&sa), sizeof(sa)) < 0 || listen(fd, 16) < 0) {
    int err = errno;
    close(fd);
    *what = "bind/listen";
    return -err;
  }
  return fd;
}

int WaitReadable(int fd, int timeoutMs) {
  struct pollfd p{fd, POLLIN, 0};
  int r;
  do r = poll(&p, 1, timeoutMs);
  while (r < 0 && errno == EINTR);
  if (r < 0) return -errno;
  if (r == 0) return -ETIMEDOUT;
  if (p.revents & POLLNVAL) return -EBADF;
  return 0;
}

ssize_t SendWithFds(int sock, const void* data, size_t len, const int* fds, size_t nfds, int flags) {
  struct iovec iov{const_cast<void*>(data), len};
  struct msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  std::vector<char> cbuf;
  if (nfds > 0) {
    // vector storage comes from operator new: aligned for cmsghdr.
    cbuf.assign(CMSG_SPACE(sizeof(int) * nfds), 0);
    mh.msg_control = cbuf.data();
    mh.msg_controllen = cbuf.size();
    struct cmsghdr* c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int) * nfds);
    memcpy(CMSG_DATA(c), fds, sizeof(int) * nfds);
  }
  ssize_t n;
  do n = sendmsg(sock, &mh, flags | MSG_NOSIGNAL);
  while (n < 0 && errno == EINTR);
  return n;
}

ssize_t RecvWithFds(int sock, void* buf, size_t len, int flags, size_t maxFds, std::vector<int>* fds,
                    int* msgFlags) {
  alignas(struct cmsghdr) char cbuf[CMSG_SPACE(sizeof(int) * kMaxRecvFds)];
  struct iovec iov{buf, len};
  struct msghdr mh{};
  mh.msg_iov = &iov;
  mh.msg_iovlen = 1;
  mh.msg_control = cbuf;
  mh.msg_controllen = CMSG_SPACE(sizeof(int) * std::min(std::max<size_t>(maxFds, 1), kMaxRecvFds));
  ssize_t n;
  do n = recvmsg(sock, &mh, flags | MSG_CMSG_CLOEXEC);
  while (n < 0 && errno == EINTR);
  if (msgFlags != nullptr) *msgFlags = n < 0 ? 0 : mh.msg_flags;
  if (n < 0) return n;
  for (struct cmsghdr* c = CMSG_FIRSTHDR(&mh); c != nullptr; c = CMSG_NXTHDR(&mh, c)) {
    if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
    size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
    for (size_t i = 0; i < k; i++) {
      int fd;
      memcpy(&fd, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
      fds->push_back(fd);
    }
  }
  return n;
}

}  // namespace lr
