// Socket option reads shared by the inet and unix socket dumps.
#include "net/sockopt.h"

#include <sys/socket.h>
#include <sys/time.h>

#include <cerrno>

#include "common/errors.h"

namespace lr {

int GetSockInt(Napi::Env env, int fd, int level, int opt, const char* what) {
  int v = 0;
  socklen_t l = sizeof(v);
  if (getsockopt(fd, level, opt, &v, &l) < 0) ThrowErrno(env, errno, "getsockopt", what);
  return v;
}

bool TryGetSockInt(int fd, int level, int opt, int* v) {
  socklen_t l = sizeof(*v);
  return getsockopt(fd, level, opt, v, &l) == 0;
}

void GetSockTimeouts(Napi::Env env, int fd, Napi::Object o) {
  timeval tv{};
  socklen_t tl = sizeof(tv);
  if (getsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, &tl) < 0) ThrowErrno(env, errno, "getsockopt", "SO_SNDTIMEO");
  o.Set("sndTmoSec", static_cast<double>(tv.tv_sec));
  o.Set("sndTmoUsec", static_cast<double>(tv.tv_usec));
  tl = sizeof(tv);
  if (getsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, &tl) < 0) ThrowErrno(env, errno, "getsockopt", "SO_RCVTIMEO");
  o.Set("rcvTmoSec", static_cast<double>(tv.tv_sec));
  o.Set("rcvTmoUsec", static_cast<double>(tv.tv_usec));
}

}  // namespace lr
