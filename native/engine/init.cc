// Node-API wrapper of the fault engine: class NativeFaultEngine. Events
// leave the worker threads through one ThreadSafeFunction call per batch
// (the queue is drained whole on the JS thread). close() stops and joins
// the workers; an env cleanup hook does the same if JS never called it.
#include <sched.h>
#include <string.h>

#include <memory>
#include <system_error>

#include "common/errors.h"
#include "common/modules.h"
#include "engine/engine.h"
#include "uffd/uffd_abi.h"

namespace lr {
namespace {

using engine::Engine;
using engine::Event;

class NativeFaultEngine : public Napi::ObjectWrap<NativeFaultEngine> {
 public:
  static Napi::Function Define(Napi::Env env) {
    return DefineClass(env, "NativeFaultEngine",
                       {InstanceMethod("addSource", &NativeFaultEngine::AddSource),
                        InstanceMethod("adopt", &NativeFaultEngine::Adopt),
                        InstanceMethod("addSharedObject", &NativeFaultEngine::AddSharedObject),
                        InstanceMethod("sharedStats", &NativeFaultEngine::SharedStats),
                        InstanceMethod("supply", &NativeFaultEngine::Supply),
                        InstanceMethod("prefetch", &NativeFaultEngine::Prefetch),
                        InstanceMethod("prefetchFirst", &NativeFaultEngine::PrefetchFirst),
                        InstanceMethod("verifyAhead", &NativeFaultEngine::VerifyAhead),
                        InstanceMethod("setFaultLog", &NativeFaultEngine::SetFaultLog),
                        InstanceMethod("drainFaultLog", &NativeFaultEngine::DrainFaultLog),
                        InstanceMethod("lazyRanges", &NativeFaultEngine::LazyRanges),
                        InstanceMethod("lazyBytes", &NativeFaultEngine::LazyBytes),
                        InstanceMethod("release", &NativeFaultEngine::Release),
                        InstanceMethod("kill", &NativeFaultEngine::Kill),
                        InstanceMethod("attachLink", &NativeFaultEngine::AttachLink),
                        InstanceMethod("detachLink", &NativeFaultEngine::DetachLink),
                        InstanceMethod("links", &NativeFaultEngine::Links),
                        InstanceMethod("startPull", &NativeFaultEngine::StartPull),
                        InstanceMethod("stopPull", &NativeFaultEngine::StopPull),
                        InstanceMethod("pullStats", &NativeFaultEngine::PullStats),
                        InstanceMethod("dupUffd", &NativeFaultEngine::DupUffd),
                        InstanceMethod("stats", &NativeFaultEngine::Stats),
                        InstanceMethod("close", &NativeFaultEngine::Close)});
  }

  // new NativeFaultEngine(threads, faultAroundPages, spinMicros, onEvents)
  explicit NativeFaultEngine(const Napi::CallbackInfo& info) : Napi::ObjectWrap<NativeFaultEngine>(info) {
    Napi::Env env = info.Env();
    Engine::Options o;
    o.threads = static_cast<unsigned>(ArgI32(info, 0, "threads"));
    o.faultAroundPages = ArgU64(info, 1, "faultAroundPages");
    o.spinMicros = ArgU64(info, 2, "spinMicros");
    if (o.threads < 1 || o.threads > 64) throw Napi::RangeError::New(env, "threads must be 1..64");
    if (o.faultAroundPages < 1 || o.faultAroundPages > 4096)
      throw Napi::RangeError::New(env, "faultAroundPages must be 1..4096");
    if (o.spinMicros > 100000) throw Napi::RangeError::New(env, "spinMicros must be <= 100000");
    if (info.Length() < 4 || !info[3].IsFunction()) throw Napi::TypeError::New(env, "onEvents must be a function");
    if (info.Length() > 4 && info[4].IsArray()) {
      Napi::Array cpus = info[4].As<Napi::Array>();
      for (uint32_t i = 0; i < cpus.Length(); i++) {
        Napi::Value v = cpus.Get(i);
        if (!v.IsNumber() || v.As<Napi::Number>().Int32Value() < 0 || v.As<Napi::Number>().Int32Value() >= CPU_SETSIZE)
          throw Napi::RangeError::New(env, "cpus must be CPU numbers");
        o.cpus.push_back(v.As<Napi::Number>().Int32Value());
      }
    }
    tsfn_ = Napi::ThreadSafeFunction::New(env, info[3].As<Napi::Function>(), "lr-fault-engine", 0, 1);
    alive_ = std::make_shared<bool>(true);
    try {
      std::shared_ptr<bool> alive = alive_;
      engine_ = std::make_unique<Engine>(o, [this, alive] {
        // Called with no engine lock held; the TSFN queue is unbounded.
        tsfn_.NonBlockingCall([this, alive](Napi::Env env, Napi::Function fn) {
          if (*alive) Deliver(env, fn);
        });
      });
    } catch (const std::system_error& e) {
      tsfn_.Release();
      ThrowErrno(env, e.code().value(), "FaultEngine", e.what());
    }
    env_ = env;
    napi_add_env_cleanup_hook(env, &NativeFaultEngine::CleanupHook, this);
  }

  ~NativeFaultEngine() override {
    napi_remove_env_cleanup_hook(env_, &NativeFaultEngine::CleanupHook, this);
    Shutdown();
  }

 private:
  static void CleanupHook(void* self) { static_cast<NativeFaultEngine*>(self)->Shutdown(); }

  void Shutdown() {
    if (!engine_ || closed_) return;
    closed_ = true;
    engine_->Stop();
    *alive_ = false;
    tsfn_.Release();
  }

  Engine& Eng(Napi::Env env) {
    if (closed_) ThrowErrno(env, EBADF, "FaultEngine", "(engine is closed)");
    return *engine_;
  }

  static Napi::BigInt Big(Napi::Env env, uint64_t v) { return Napi::BigInt::New(env, v); }

  void Deliver(Napi::Env env, Napi::Function fn) {
    std::vector<Event> evs;
    engine_->TakeEvents(&evs);
    if (evs.empty()) return;
    Napi::Array arr = Napi::Array::New(env, evs.size());
    for (size_t i = 0; i < evs.size(); i++) {
      const Event& e = evs[i];
      Napi::Object o = Napi::Object::New(env);
      o.Set("proc", Napi::Number::New(env, e.proc));
      switch (e.type) {
        case engine::kEvFork:
          o.Set("type", "fork");
          o.Set("child", Napi::Number::New(env, e.child));
          break;
        case engine::kEvRemap:
          o.Set("type", "remap");
          o.Set("from", Big(env, e.a));
          o.Set("to", Big(env, e.b));
          o.Set("len", Big(env, e.c));
          break;
        case engine::kEvRemove:
        case engine::kEvUnmap:
          o.Set("type", e.type == engine::kEvRemove ? "remove" : "unmap");
          o.Set("start", Big(env, e.a));
          o.Set("end", Big(env, e.b));
          break;
        case engine::kEvNeed:
          o.Set("type", "need");
          o.Set("addr", Big(env, e.a));
          o.Set("imageAddr", Big(env, e.b));
          o.Set("len", Big(env, e.c));
          break;
        case engine::kEvPrefetched:
          o.Set("type", "prefetched");
          o.Set("start", Big(env, e.a));
          o.Set("len", Big(env, e.b));
          o.Set("copied", Big(env, e.c));
          break;
        case engine::kEvComplete:
          o.Set("type", "complete");
          break;
        case engine::kEvWarmed:
          o.Set("type", "warmed");
          o.Set("copied", Big(env, e.c));
          break;
        case engine::kEvExit:
          o.Set("type", "exit");
          break;
        case engine::kEvLinkError:
          o.Set("type", "link-error");
          o.Set("slot", Napi::Number::New(env, static_cast<double>(e.a)));
          o.Set("lost", Napi::Number::New(env, static_cast<double>(e.b)));
          SetErrno(env, o, e);
          break;
        case engine::kEvPullEnd:
          o.Set("type", "pull-end");
          o.Set("pull", Napi::Number::New(env, static_cast<double>(e.a)));
          o.Set("pages", Napi::Number::New(env, static_cast<double>(e.b)));
          if (e.err) SetErrno(env, o, e);
          break;
        case engine::kEvError:
          o.Set("type", "error");
          SetErrno(env, o, e);
          break;
      }
      arr.Set(static_cast<uint32_t>(i), o);
    }
    fn.Call({arr});
  }

  // The errno fields of an 'error' / 'link-error' event, as on a native
  // errno Error (common/errors.h): code, errno, syscall, message.
  static void SetErrno(Napi::Env env, Napi::Object o, const Event& e) {
    o.Set("code", ErrnoName(e.err));
    o.Set("errno", Napi::Number::New(env, e.err));
    o.Set("syscall", e.syscall);
    o.Set("message", ErrnoMessage(e.err, e.syscall.c_str(), e.message));
  }

  uint32_t Handle(const Napi::CallbackInfo& info, size_t i) {
    int32_t h = ArgI32(info, i, "proc");
    if (h <= 0) throw Napi::RangeError::New(info.Env(), "proc must be a positive process handle");
    return static_cast<uint32_t>(h);
  }

  [[noreturn]] void ThrowProc(Napi::Env env, int err, const char* syscall, uint32_t h) {
    ThrowErrno(env, err, syscall, "(process handle " + std::to_string(h) + ")");
  }

  // addSource(path[, checksums: Uint32Array, chunkSize]) -> { id, size }
  Napi::Value AddSource(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine& eng = Eng(env);
    if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "path must be a string");
    std::string path = info[0].As<Napi::String>();
    std::vector<uint32_t> sums;
    uint64_t chunk = 0;
    if (info.Length() > 1 && !info[1].IsUndefined()) {
      if (!info[1].IsTypedArray() || info[1].As<Napi::TypedArray>().TypedArrayType() != napi_uint32_array)
        throw Napi::TypeError::New(env, "checksums must be a Uint32Array");
      auto a = info[1].As<Napi::Uint32Array>();
      sums.assign(a.Data(), a.Data() + a.ElementLength());
      chunk = ArgU64(info, 2, "chunkSize");
    }
    uint32_t id = 0;
    uint64_t size = 0;
    const char* what = "open";
    int r = eng.AddSource(path, &id, &size, &what, std::move(sums), chunk);
    if (r < 0) ThrowErrno(env, -r, what, path);
    Napi::Object o = Napi::Object::New(env);
    o.Set("id", Napi::Number::New(env, id));
    o.Set("size", Big(env, size));
    return o;
  }

  // adopt(uffd, ranges: BigUint64Array [start, end, kind, source, off]*, pidfd[, remotePid])
  Napi::Value Adopt(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine& eng = Eng(env);
    int uffd = ArgFd(info, 0, "uffd");
    if (info.Length() < 2 || !info[1].IsTypedArray() ||
        info[1].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array)
      throw Napi::TypeError::New(env, "ranges must be a BigUint64Array");
    auto arr = info[1].As<Napi::TypedArrayOf<uint64_t>>();
    if (arr.ElementLength() % 5 != 0) throw Napi::RangeError::New(env, "ranges length must be a multiple of 5");
    int pidfd = info.Length() > 2 ? ArgI32(info, 2, "pidfd") : -1;
    int32_t remotePid = info.Length() > 3 && !info[3].IsUndefined() ? ArgI32(info, 3, "remotePid") : 0;
    if (remotePid < 0) throw Napi::RangeError::New(env, "remotePid must be >= 0");
    std::vector<engine::Piece> ranges;
    for (size_t i = 0; i < arr.ElementLength(); i += 5) {
      engine::Piece p;
      p.start = arr[i];
      p.span.end = arr[i + 1];
      if (arr[i + 2] > engine::kShared) throw Napi::RangeError::New(env, "bad range kind");
      p.span.kind = static_cast<engine::Kind>(arr[i + 2]);
      p.span.source = static_cast<uint32_t>(arr[i + 3]);
      p.span.off = arr[i + 4];
      ranges.push_back(p);
    }
    uint32_t h = 0;
    const char* what = "adopt";
    int r = eng.Adopt(uffd, pidfd, std::move(ranges), &h, &what, remotePid);
    if (r < 0) ThrowErrno(env, -r, what, "(uffd " + std::to_string(uffd) + ")");
    return Napi::Number::New(env, h);
  }

  // addSharedObject(name, size, data: BigUint64Array [objOff, objEnd, source, fileOff]*) -> id
  Napi::Value AddSharedObject(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine& eng = Eng(env);
    if (info.Length() < 1 || !info[0].IsString()) throw Napi::TypeError::New(env, "name must be a string");
    std::string name = info[0].As<Napi::String>();
    uint64_t size = ArgU64(info, 1, "size");
    if (info.Length() < 3 || !info[2].IsTypedArray() ||
        info[2].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array)
      throw Napi::TypeError::New(env, "data must be a BigUint64Array");
    auto arr = info[2].As<Napi::TypedArrayOf<uint64_t>>();
    if (arr.ElementLength() % 4 != 0) throw Napi::RangeError::New(env, "data length must be a multiple of 4");
    std::vector<engine::Piece> data;
    for (size_t i = 0; i < arr.ElementLength(); i += 4) {
      engine::Piece p;
      p.start = arr[i];
      p.span.end = arr[i + 1];
      p.span.kind = engine::kFile;
      p.span.source = static_cast<uint32_t>(arr[i + 2]);
      p.span.off = arr[i + 3];
      data.push_back(p);
    }
    uint32_t id = 0;
    const char* what = "addSharedObject";
    int r = eng.AddSharedObject(name, size, std::move(data), &id, &what);
    if (r < 0) ThrowErrno(env, -r, what, name);
    return Napi::Number::New(env, id);
  }

  // sharedStats() -> [{ name, copiedPages, zeroPages, refilledPages, presentPages, poisonedPages, servedPages }]
  Napi::Value SharedStats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto v = Eng(env).SharedSnapshot();
    Napi::Array out = Napi::Array::New(env, v.size());
    for (size_t i = 0; i < v.size(); i++) {
      const engine::SharedStats& st = v[i].second;
      Napi::Object o = Napi::Object::New(env);
      o.Set("name", v[i].first);
      o.Set("copiedPages", Napi::Number::New(env, static_cast<double>(st.copiedPages)));
      o.Set("zeroPages", Napi::Number::New(env, static_cast<double>(st.zeroPages)));
      o.Set("refilledPages", Napi::Number::New(env, static_cast<double>(st.refilledPages)));
      o.Set("presentPages", Napi::Number::New(env, static_cast<double>(st.presentPages)));
      o.Set("poisonedPages", Napi::Number::New(env, static_cast<double>(st.poisonedPages)));
      o.Set("servedPages", Napi::Number::New(env, static_cast<double>(st.servedPages)));
      out.Set(static_cast<uint32_t>(i), o);
    }
    return out;
  }

  // supply(proc, imageAddr, data) -> bytes copied
  Napi::Value Supply(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine& eng = Eng(env);
    uint32_t h = Handle(info, 0);
    uint64_t ia = ArgU64(info, 1, "imageAddr");
    if (info.Length() < 3 || !info[2].IsBuffer()) throw Napi::TypeError::New(env, "data must be a Buffer");
    auto data = info[2].As<Napi::Buffer<uint8_t>>();
    uint64_t copied = 0;
    int r = eng.Supply(h, ia, data.Data(), data.Length(), &copied);
    if (r < 0) ThrowProc(env, -r, "supply", h);
    return Big(env, copied);
  }

  Napi::Value Prefetch(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine& eng = Eng(env);
    uint32_t h = Handle(info, 0);
    uint64_t start = ArgU64(info, 1, "start"), len = ArgU64(info, 2, "len");
    const bool follow = info.Length() > 3 && info[3].IsBoolean() && info[3].As<Napi::Boolean>().Value();
    int r = eng.Prefetch(h, start, len, follow);
    if (r < 0) ThrowProc(env, -r, "prefetch", h);
    return env.Undefined();
  }

  // prefetchFirst(proc, ranges: BigUint64Array [start, end]*): the working set, in order.
  Napi::Value PrefetchFirst(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine& eng = Eng(env);
    uint32_t h = Handle(info, 0);
    if (info.Length() < 2 || !info[1].IsTypedArray() ||
        info[1].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array)
      throw Napi::TypeError::New(env, "ranges must be a BigUint64Array");
    auto arr = info[1].As<Napi::TypedArrayOf<uint64_t>>();
    if (arr.ElementLength() % 2 != 0) throw Napi::RangeError::New(env, "ranges length must be even");
    std::vector<std::pair<uint64_t, uint64_t>> v;
    for (size_t i = 0; i < arr.ElementLength(); i += 2) {
      uint64_t s = arr[i], e = arr[i + 1];
      if ((s | e) & (lr::kPageSize - 1) || e < s) throw Napi::RangeError::New(env, "ranges must be page aligned, start <= end");
      v.emplace_back(s, e);
    }
    int r = eng.PrefetchFirst(h, v);
    if (r < 0) ThrowProc(env, -r, "prefetchFirst", h);
    return env.Undefined();
  }

  // verifyAhead(source, spans: BigUint64Array [offset, length]*): checks those chunks on a thread of its own.
  Napi::Value VerifyAhead(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine& eng = Eng(env);
    uint32_t source = static_cast<uint32_t>(ArgU64(info, 0, "source"));
    if (info.Length() < 2 || !info[1].IsTypedArray() ||
        info[1].As<Napi::TypedArray>().TypedArrayType() != napi_biguint64_array)
      throw Napi::TypeError::New(env, "spans must be a BigUint64Array");
    auto arr = info[1].As<Napi::TypedArrayOf<uint64_t>>();
    if (arr.ElementLength() % 2 != 0) throw Napi::RangeError::New(env, "spans length must be even");
    std::vector<std::pair<uint64_t, uint64_t>> v;
    v.reserve(arr.ElementLength() / 2);
    for (size_t i = 0; i < arr.ElementLength(); i += 2) v.emplace_back(arr[i], arr[i + 1]);
    int r = eng.VerifyAhead(source, std::move(v));
    if (r < 0) ThrowErrno(env, -r, "verifyAhead", "(source " + std::to_string(source) + ")");
    return env.Undefined();
  }

  // setFaultLog(capacity): 0 turns the log off.
  Napi::Value SetFaultLog(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int32_t cap = ArgI32(info, 0, "capacity");
    if (cap < 0 || cap > (1 << 24)) throw Napi::RangeError::New(env, "capacity must be 0..16777216");
    Eng(env).SetLogCapacity(static_cast<size_t>(cap));
    return env.Undefined();
  }

  // drainFaultLog() -> { entries: BigUint64Array [tNs, proc, start, pages, kind, fault]*, dropped }
  Napi::Value DrainFaultLog(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    std::vector<engine::LogEntry> v;
    uint64_t dropped = 0;
    Eng(env).DrainLog(&v, &dropped);
    auto out = Napi::TypedArrayOf<uint64_t>::New(env, v.size() * 6, napi_biguint64_array);
    for (size_t i = 0; i < v.size(); i++) {
      out[6 * i] = v[i].tNs;
      out[6 * i + 1] = v[i].proc;
      out[6 * i + 2] = v[i].start;
      out[6 * i + 3] = v[i].pages;
      out[6 * i + 4] = v[i].kind;
      out[6 * i + 5] = v[i].fault;
    }
    Napi::Object o = Napi::Object::New(env);
    o.Set("entries", out);
    o.Set("dropped", Napi::Number::New(env, static_cast<double>(dropped)));
    return o;
  }

  std::shared_ptr<engine::Proc> FindProc(const Napi::CallbackInfo& info, const char* what) {
    uint32_t h = Handle(info, 0);
    auto p = Eng(info.Env()).Find(h);
    if (!p) ThrowProc(info.Env(), ENOENT, what, h);
    return p;
  }

  // lazyRanges(proc) -> BigUint64Array [start, end]* (lazy and in flight, sorted)
  Napi::Value LazyRanges(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto p = FindProc(info, "lazyRanges");
    std::vector<std::pair<uint64_t, uint64_t>> v;
    {
      std::lock_guard<std::mutex> g(p->mu);
      for (const auto& [s, sp] : p->lazy.raw()) v.emplace_back(s, sp.end);
      for (const auto& [s, sp] : p->inflight.raw()) v.emplace_back(s, sp.end);
    }
    std::sort(v.begin(), v.end());
    auto out = Napi::TypedArrayOf<uint64_t>::New(env, v.size() * 2, napi_biguint64_array);
    for (size_t i = 0; i < v.size(); i++) {
      out[2 * i] = v[i].first;
      out[2 * i + 1] = v[i].second;
    }
    return out;
  }

  Napi::Value LazyBytes(const Napi::CallbackInfo& info) {
    auto p = FindProc(info, "lazyBytes");
    std::lock_guard<std::mutex> g(p->mu);
    return Big(info.Env(), p->lazy.bytes() + p->inflight.bytes());
  }

  Napi::Value Release(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t h = Handle(info, 0);
    int r = Eng(env).Release(h);
    if (r < 0) ThrowProc(env, -r, "release", h);
    return env.Undefined();
  }

  Napi::Value Kill(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t h = Handle(info, 0);
    int r = Eng(env).Kill(h);
    if (r < 0) ThrowProc(env, -r, "pidfd_send_signal", h);
    return env.Undefined();
  }

  // attachLink(slot, fd, stallMs, spinMicros): the engine keeps a duplicate of fd.
  Napi::Value AttachLink(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine& eng = Eng(env);
    int32_t slot = ArgI32(info, 0, "slot");
    int fd = ArgFd(info, 1, "fd");
    uint64_t stallMs = ArgU64(info, 2, "stallMs"), spin = ArgU64(info, 3, "spinMicros");
    if (slot < 0 || static_cast<unsigned>(slot) >= eng.threads()) throw Napi::RangeError::New(env, "slot must be 0..threads-1");
    if (stallMs < 1 || stallMs > 3600000) throw Napi::RangeError::New(env, "stallMs must be 1..3600000");
    if (spin > 100000) throw Napi::RangeError::New(env, "spinMicros must be <= 100000");
    const char* what = "attachLink";
    int r = eng.AttachLink(static_cast<unsigned>(slot), fd, stallMs, spin, &what);
    if (r < 0) ThrowErrno(env, -r, what, "(fd " + std::to_string(fd) + ")");
    return env.Undefined();
  }

  Napi::Value DetachLink(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    if (closed_) return env.Undefined();  // Stop() closed every link
    int32_t slot = ArgI32(info, 0, "slot");
    if (slot < 0 || static_cast<unsigned>(slot) >= engine_->threads()) throw Napi::RangeError::New(env, "slot must be 0..threads-1");
    int r = engine_->DetachLink(static_cast<unsigned>(slot));
    if (r < 0) ThrowErrno(env, -r, "detachLink");
    return env.Undefined();
  }

  // links() -> [{ attached, outstanding, gets, pages, shortReplies, failures, attaches }] per slot
  Napi::Value Links(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    auto v = Eng(env).Links();
    Napi::Array out = Napi::Array::New(env, v.size());
    for (size_t i = 0; i < v.size(); i++) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("attached", Napi::Boolean::New(env, v[i].attached));
      o.Set("outstanding", Napi::Number::New(env, static_cast<double>(v[i].outstanding)));
      o.Set("gets", Napi::Number::New(env, static_cast<double>(v[i].gets)));
      o.Set("pages", Napi::Number::New(env, static_cast<double>(v[i].pages)));
      o.Set("shortReplies", Napi::Number::New(env, static_cast<double>(v[i].shortReplies)));
      o.Set("failures", Napi::Number::New(env, static_cast<double>(v[i].failures)));
      o.Set("attaches", Napi::Number::New(env, static_cast<double>(v[i].attaches)));
      out.Set(static_cast<uint32_t>(i), o);
    }
    return out;
  }

  // startPull(proc, fd, getPages, windowPages, stallMs) -> pull id; the engine keeps a duplicate of fd.
  Napi::Value StartPull(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine& eng = Eng(env);
    uint32_t h = Handle(info, 0);
    int fd = ArgFd(info, 1, "fd");
    uint64_t get = ArgU64(info, 2, "getPages"), window = ArgU64(info, 3, "windowPages"), stallMs = ArgU64(info, 4, "stallMs");
    if (get < 1 || get > 4096) throw Napi::RangeError::New(env, "getPages must be 1..4096");
    if (window < get || window > 65536) throw Napi::RangeError::New(env, "windowPages must be getPages..65536");
    if (stallMs < 1 || stallMs > 3600000) throw Napi::RangeError::New(env, "stallMs must be 1..3600000");
    uint32_t id = 0;
    const char* what = "startPull";
    int r = eng.StartPull(h, fd, get, window, stallMs, &id, &what);
    if (r < 0) ThrowProc(env, -r, what, h);
    return Napi::Number::New(env, id);
  }

  Napi::Value StopPull(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int32_t id = ArgI32(info, 0, "pull");
    if (!closed_ && id > 0) engine_->StopPull(static_cast<uint32_t>(id));
    return env.Undefined();
  }

  // pullStats(id) -> { pages, gets } or undefined once stopped
  Napi::Value PullStats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    int32_t id = ArgI32(info, 0, "pull");
    uint64_t pages = 0, gets = 0;
    if (closed_ || id <= 0 || !engine_->PullStats(static_cast<uint32_t>(id), &pages, &gets)) return env.Undefined();
    Napi::Object o = Napi::Object::New(env);
    o.Set("pages", Napi::Number::New(env, static_cast<double>(pages)));
    o.Set("gets", Napi::Number::New(env, static_cast<double>(gets)));
    return o;
  }

  Napi::Value DupUffd(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    uint32_t h = Handle(info, 0);
    int fd = -1;
    int r = Eng(env).DupUffd(h, &fd);
    if (r < 0) ThrowProc(env, -r, "fcntl(F_DUPFD_CLOEXEC)", h);
    return Napi::Number::New(env, fd);
  }

  Napi::Value Stats(const Napi::CallbackInfo& info) {
    Napi::Env env = info.Env();
    Engine& eng = Eng(env);
    Napi::Object out = Napi::Object::New(env);
    Napi::Array procs = Napi::Array::New(env);
    static const char* states[] = {"live", "exited", "failed", "released"};
    uint32_t i = 0;
    for (const auto& s : eng.Snapshot()) {
      Napi::Object o = Napi::Object::New(env);
      o.Set("proc", Napi::Number::New(env, s.handle));
      o.Set("state", states[s.state]);
      o.Set("lazyBytes", Big(env, s.lazyBytes));
      o.Set("faults", Big(env, s.st.faults));
      o.Set("served", Big(env, s.st.served));
      o.Set("ignored", Big(env, s.st.ignored));
      o.Set("unexpected", Big(env, s.st.unexpected));
      o.Set("zeroPages", Big(env, s.st.zeroPages));
      o.Set("copiedPages", Big(env, s.st.copiedPages));
      o.Set("pushedPages", Big(env, s.st.pushedPages));
      o.Set("suppliedPages", Big(env, s.st.suppliedPages));
      o.Set("bytes", Big(env, s.st.bytes));
      o.Set("needs", Big(env, s.st.needs));
      o.Set("remoteGets", Big(env, s.st.remoteGets));
      o.Set("remotePages", Big(env, s.st.remotePages));
      o.Set("eagain", Big(env, s.st.eagain));
      o.Set("eexist", Big(env, s.st.eexist));
      o.Set("enoent", Big(env, s.st.enoent));
      Napi::Array hist = Napi::Array::New(env, engine::kHistBuckets);
      for (int b = 0; b < engine::kHistBuckets; b++) hist.Set(b, Napi::Number::New(env, static_cast<double>(s.st.hist[b])));
      o.Set("latencyLog2Ns", hist);
      procs.Set(i++, o);
    }
    out.Set("procs", procs);
    Napi::Array cpu = Napi::Array::New(env);
    uint32_t k = 0;
    for (uint64_t ns : eng.ThreadCpuNs()) cpu.Set(k++, Big(env, ns));
    out.Set("threadCpuNs", cpu);
    return out;
  }

  Napi::Value Close(const Napi::CallbackInfo& info) {
    Shutdown();
    return info.Env().Undefined();
  }

  std::unique_ptr<Engine> engine_;
  Napi::ThreadSafeFunction tsfn_;
  std::shared_ptr<bool> alive_;
  bool closed_ = false;
  napi_env env_ = nullptr;
};

}  // namespace

void InitPageResponder(Napi::Env env, Napi::Object exports);  // responder.cc

void InitEngine(Napi::Env env, Napi::Object exports) {
  exports.Set("NativeFaultEngine", NativeFaultEngine::Define(env));
  InitPageResponder(env, exports);
}

}  // namespace lr
