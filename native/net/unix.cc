// Unix sockets (plugin/dump/fds/unix.ts, plugin/restore/fds/unix.ts): the
// generic socket options of a socket and the file its name is bound to
// (SIOCUNIXFILE), read from a duplicate the dumper took with pidfd_getfd;
// and the options put back on a duplicate of a restored socket. Creating,
// binding, connecting and shutting sockets down is done by injected
// syscalls inside the restored process (paths resolve in its namespaces).
#include <napi.h>

#include <fcntl.h>
#include <linux/sockios.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <unistd.h>

#include <cerrno>
#include <string>

#include "common/errors.h"
#include "common/modules.h"
#include "net/sockopt.h"

#ifndef SIOCUNIXFILE
#define SIOCUNIXFILE (SIOCPROTOPRIVATE + 0)
#endif

namespace lr {
namespace {

int Get(Napi::Env env, int fd, int opt, const char* what) { return GetSockInt(env, fd, SOL_SOCKET, opt, what); }

void Set(Napi::Env env, int fd, int opt, int v, const char* what) {
  if (setsockopt(fd, SOL_SOCKET, opt, &v, sizeof(v)) < 0) ThrowErrno(env, errno, "setsockopt", what);
}

void SetTimeval(Napi::Env env, int fd, int opt, double sec, double usec, const char* what) {
  timeval tv{static_cast<time_t>(sec), static_cast<suseconds_t>(usec)};
  if (setsockopt(fd, SOL_SOCKET, opt, &tv, sizeof(tv)) < 0) ThrowErrno(env, errno, "setsockopt", what);
}

double Num(const Napi::Object& o, const char* k) {
  Napi::Value v = o.Get(k);
  return v.IsNumber() ? v.As<Napi::Number>().DoubleValue() : 0;
}

bool Flag(const Napi::Object& o, const char* k) {
  Napi::Value v = o.Get(k);
  return v.IsBoolean() ? v.As<Napi::Boolean>().Value() : (v.IsNumber() && v.As<Napi::Number>().DoubleValue() != 0);
}

// unixSockDump(fd) -> { sndbuf, rcvbuf, sndTmoSec, sndTmoUsec, rcvTmoSec,
//   rcvTmoUsec, passcred, passsec, priority, rcvlowat, mark, peekOff,
//   file?: { path, deleted, mode, uid, gid } }. `file` is the inode the
// socket's path name is bound to (SIOCUNIXFILE; absent for unbound and
// abstract sockets): its path as this process sees it, with " (deleted)"
// stripped and reported in `deleted`.
Napi::Value UnixSockDump(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  Napi::Object o = Napi::Object::New(env);
  o.Set("sndbuf", Get(env, fd, SO_SNDBUF, "SO_SNDBUF"));
  o.Set("rcvbuf", Get(env, fd, SO_RCVBUF, "SO_RCVBUF"));
  GetSockTimeouts(env, fd, o);
  o.Set("passcred", Get(env, fd, SO_PASSCRED, "SO_PASSCRED") != 0);
  o.Set("passsec", Get(env, fd, SO_PASSSEC, "SO_PASSSEC") != 0);
  o.Set("priority", Get(env, fd, SO_PRIORITY, "SO_PRIORITY"));
  o.Set("rcvlowat", Get(env, fd, SO_RCVLOWAT, "SO_RCVLOWAT"));
  o.Set("mark", Get(env, fd, SO_MARK, "SO_MARK"));
  o.Set("peekOff", Get(env, fd, SO_PEEK_OFF, "SO_PEEK_OFF"));
  int f = ioctl(fd, SIOCUNIXFILE);
  if (f >= 0) {
    struct stat st{};
    char path[4096];
    std::string proc = "/proc/self/fd/" + std::to_string(f);
    ssize_t n = readlink(proc.c_str(), path, sizeof(path) - 1);
    int e = errno;
    bool statOk = fstat(f, &st) == 0;
    close(f);
    if (n < 0) ThrowErrno(env, e, "readlink", "(the bound file of a unix socket)");
    std::string p(path, static_cast<size_t>(n));
    const std::string del = " (deleted)";
    bool deleted = p.size() > del.size() && p.compare(p.size() - del.size(), del.size(), del) == 0;
    if (deleted) p.resize(p.size() - del.size());
    Napi::Object file = Napi::Object::New(env);
    file.Set("path", p);
    file.Set("deleted", deleted);
    if (statOk) {
      file.Set("mode", static_cast<double>(st.st_mode));
      file.Set("uid", static_cast<double>(st.st_uid));
      file.Set("gid", static_cast<double>(st.st_gid));
    }
    o.Set("file", file);
  } else if (errno != ENOENT && errno != EINVAL && errno != ENOTCONN) {
    ThrowErrno(env, errno, "ioctl(SIOCUNIXFILE)");
  }
  return o;
}

// unixSockOptsRestore(fd, opts): the dumped generic options (sk_opts_entry
// fields, as unixSockDump names them) on a restored unix socket.
Napi::Value UnixSockOptsRestore(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int fd = ArgFd(info, 0, "fd");
  if (info.Length() < 2 || !info[1].IsObject()) throw Napi::TypeError::New(env, "opts must be an object");
  Napi::Object o = info[1].As<Napi::Object>();
  // The kernel doubles what is set; the dumped values are doubled already.
  int sb = static_cast<int>(Num(o, "sndbuf") / 2), rb = static_cast<int>(Num(o, "rcvbuf") / 2);
  if (sb && Get(env, fd, SO_SNDBUF, "SO_SNDBUF") != static_cast<int>(Num(o, "sndbuf"))) Set(env, fd, SO_SNDBUFFORCE, sb, "SO_SNDBUFFORCE");
  if (rb && Get(env, fd, SO_RCVBUF, "SO_RCVBUF") != static_cast<int>(Num(o, "rcvbuf"))) Set(env, fd, SO_RCVBUFFORCE, rb, "SO_RCVBUFFORCE");
  if (Num(o, "sndTmoSec") || Num(o, "sndTmoUsec")) SetTimeval(env, fd, SO_SNDTIMEO, Num(o, "sndTmoSec"), Num(o, "sndTmoUsec"), "SO_SNDTIMEO");
  if (Num(o, "rcvTmoSec") || Num(o, "rcvTmoUsec")) SetTimeval(env, fd, SO_RCVTIMEO, Num(o, "rcvTmoSec"), Num(o, "rcvTmoUsec"), "SO_RCVTIMEO");
  if (Flag(o, "passcred")) Set(env, fd, SO_PASSCRED, 1, "SO_PASSCRED");
  if (Flag(o, "passsec")) Set(env, fd, SO_PASSSEC, 1, "SO_PASSSEC");
  if (Num(o, "priority")) Set(env, fd, SO_PRIORITY, static_cast<int>(Num(o, "priority")), "SO_PRIORITY");
  if (Num(o, "rcvlowat") > 1) Set(env, fd, SO_RCVLOWAT, static_cast<int>(Num(o, "rcvlowat")), "SO_RCVLOWAT");
  if (Num(o, "mark")) Set(env, fd, SO_MARK, static_cast<int>(Num(o, "mark")), "SO_MARK");
  return env.Undefined();
}

}  // namespace

void InitUnix(Napi::Env env, Napi::Object exports) {
  exports.Set("unixSockDump", Napi::Function::New(env, UnixSockDump, "unixSockDump"));
  exports.Set("unixSockOptsRestore", Napi::Function::New(env, UnixSockOptsRestore, "unixSockOptsRestore"));
}

}  // namespace lr
