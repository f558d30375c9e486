// Each native area registers its functions on the addon's exports object.
// Areas own their own files; addon.cc only calls these.
#pragma once

#include <napi.h>

namespace lr {
void InitUffd(Napi::Env env, Napi::Object exports);    // native/uffd: the userfaultfd ABI
void InitEngine(Napi::Env env, Napi::Object exports);  // native/engine: the fault-serving engine
void InitInject(Napi::Env env, Napi::Object exports);  // native/inject: ptrace + syscall injection
void InitRestoreNative(Napi::Env env, Napi::Object exports);  // native/inject: restore-side primitives
void InitRpc(Napi::Env env, Napi::Object exports);  // native/rpc: CRIU's RPC socket (criu swrk/service)
void InitNet(Napi::Env env, Napi::Object exports);     // native/net: inet sockets, TCP repair
void InitEvents(Napi::Env env, Napi::Object exports);  // native/net: epoll targets, file handles
void InitUnix(Napi::Env env, Napi::Object exports);    // native/net: unix socket options and bound files
void InitSysvIpc(Napi::Env env, Napi::Object exports);  // native/ipc: SysV IPC objects of an IPC namespace
void InitNs(Napi::Env env, Napi::Object exports);      // native/ns: reads in another process's namespace, mknod
void InitMount(Napi::Env env, Napi::Object exports);   // native/ns: mount(2), umount2(MNT_DETACH)
}  // namespace lr
