// Socket option reads shared by the inet and unix socket dumps.
#pragma once

#include <napi.h>

namespace lr {

// getsockopt of an int option; throws the errno error (`what`: the option's name).
int GetSockInt(Napi::Env env, int fd, int level, int opt, const char* what);

// getsockopt of an int option; false (errno set) where the kernel refuses it.
bool TryGetSockInt(int fd, int level, int opt, int* v);

// SO_SNDTIMEO and SO_RCVTIMEO into o.sndTmoSec/sndTmoUsec/rcvTmoSec/rcvTmoUsec
// (sk_opts_entry's fields); throws the errno error.
void GetSockTimeouts(Napi::Env env, int fd, Napi::Object o);

}  // namespace lr
