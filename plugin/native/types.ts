// The typed surface of the native addon (build/Release/lazy_restore.node).
// One interface per native area; NativeAddon is their union. Addresses and
// sizes are bigint; file descriptors and pids are number.
// Each area edits only its own interface below.

//
// ---------------------------------------------------------------------------
// native/uffd: the userfaultfd ABI (owner: uffd/engine work)
// ---------------------------------------------------------------------------
//
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface UffdNative {}

//
// ---------------------------------------------------------------------------
// native/engine: the fault-serving engine (owner: uffd/engine work)
// ---------------------------------------------------------------------------
//
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface EngineNative {}

//
// ---------------------------------------------------------------------------
// native/inject: ptrace, syscall injection, remote memory (owner: dump work;
// restore adds its own primitives in a separate block below)
// ---------------------------------------------------------------------------
//
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface InjectNative {}

//
// ---------------------------------------------------------------------------
// native/inject (restore side): process creation with set_tid, stub exec
// (owner: restore work)
// ---------------------------------------------------------------------------
//
// eslint-disable-next-line @typescript-eslint/no-empty-object-type
export interface RestoreNative {}

//
// ---------------------------------------------------------------------------
//
export interface NativeAddon extends UffdNative, EngineNative, InjectNative, RestoreNative {}
