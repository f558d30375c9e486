// SysV IPC objects of an IPC namespace (shared memory segments, semaphore
// sets, message queues) and the namespace's IPC sysctls: read for a dump,
// created again for a restore. Every call runs on a thread of its own that
// joins the namespace (setns(CLONE_NEWIPC) on an fd of /proc/PID/ns/ipc;
// RunInNamespaces, ns/ns_thread.h):
// an IPC namespace is a per-thread attribute, so Node's own threads never
// change namespace, and the joined one is left when the thread ends. The
// /proc/sys/kernel IPC sysctls and /proc/sys/fs/mqueue are the opening
// thread's namespace's, so they are read and written there too.
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/ipc.h>
#include <sys/mman.h>
#include <sys/msg.h>
#include <sys/sem.h>
#include <sys/shm.h>
#include <sys/vfs.h>
#include <unistd.h>

#include <cstdint>
#include <functional>
#include <string>
#include <utility>
#include <vector>

#include "common/errors.h"
#include "common/modules.h"
#include "ns/ns_thread.h"

#ifndef MSG_COPY
#define MSG_COPY 040000
#endif
#ifndef HUGETLBFS_MAGIC
#define HUGETLBFS_MAGIC 0x958458f6
#endif

namespace lr {
namespace {

constexpr uint64_t kPage = 4096;

union SemUn {
  int val;
  struct semid_ds* buf;
  unsigned short* array;
  struct seminfo* info;
};

struct Desc {
  int32_t id = 0;
  uint32_t key = 0, uid = 0, gid = 0, cuid = 0, cgid = 0, mode = 0;
};

struct Run {
  uint64_t off = 0;
  std::vector<uint8_t> bytes;  // dump: owned copy
  const uint8_t* data = nullptr;  // restore: points into a JS Buffer
  size_t len = 0;
};

struct ShmSeg {
  Desc d;
  uint64_t size = 0;
  uint32_t nattch = 0;
  std::vector<Run> runs;
};

struct SemSet {
  Desc d;
  std::vector<uint16_t> values;
};

struct Msg {
  int64_t mtype = 0;
  std::vector<uint8_t> bytes;
  const uint8_t* data = nullptr;
  size_t len = 0;
};

struct MsgQueue {
  Desc d;
  uint32_t qbytes = 0;
  std::vector<Msg> msgs;
};

// Runs `body` on a thread that first joins the IPC namespace of `nsFd`.
NsFailure InNamespace(int nsFd, const std::function<void(NsFailure&)>& body) {
  return RunInNamespaces({{nsFd, CLONE_NEWIPC, "CLONE_NEWIPC"}}, NsFs::Shared, body);
}

bool ReadSysctl(const std::string& name, std::string& out, int& err) {
  std::string path = "/proc/sys/" + name;
  int fd = open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    err = errno;
    return false;
  }
  char buf[512];
  ssize_t n = read(fd, buf, sizeof buf - 1);
  err = errno;
  close(fd);
  if (n < 0) return false;
  while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' ')) n--;
  out.assign(buf, static_cast<size_t>(n));
  return true;
}

bool WriteSysctl(const std::string& name, const std::string& value, int& err) {
  std::string path = "/proc/sys/" + name;
  int fd = open(path.c_str(), O_WRONLY | O_CLOEXEC);
  if (fd < 0) {
    err = errno;
    return false;
  }
  ssize_t n = write(fd, value.data(), value.size());
  err = errno;
  close(fd);
  return n == static_cast<ssize_t>(value.size());
}

void FillDesc(Desc& d, int id, const struct ipc_perm& p) {
  d.id = id;
  d.key = static_cast<uint32_t>(p.__key);
  d.uid = p.uid;
  d.gid = p.gid;
  d.cuid = p.cuid;
  d.cgid = p.cgid;
  d.mode = p.mode;
}

// The segment's contents: pages in its page cache (mincore on an attach),
// or, when the namespace has shared memory in swap (mincore cannot see
// those pages), every page that is not all zeros.
bool DumpShmPages(ShmSeg& s, bool swapped, NsFailure& f) {
  void* addr = shmat(s.d.id, nullptr, SHM_RDONLY);
  if (addr == reinterpret_cast<void*>(-1)) {
    f = {errno, "shmat", "SysV shm id " + std::to_string(s.d.id)};
    return false;
  }
  uint64_t len = (s.size + kPage - 1) & ~(kPage - 1);
  char mf[96];
  snprintf(mf, sizeof mf, "/proc/self/map_files/%lx-%lx", reinterpret_cast<unsigned long>(addr),
           reinterpret_cast<unsigned long>(addr) + static_cast<unsigned long>(len));
  struct statfs sfs;
  if (statfs(mf, &sfs) == 0 && static_cast<unsigned long>(sfs.f_type) == HUGETLBFS_MAGIC) {
    shmdt(addr);
    f = {EOPNOTSUPP, "shmat", "SysV shm id " + std::to_string(s.d.id) + " is hugetlb memory (not supported)"};
    return false;
  }
  std::vector<unsigned char> vec(len / kPage);
  if (!swapped && len && mincore(addr, len, vec.data()) < 0) {
    int e = errno;
    shmdt(addr);
    f = {e, "mincore", "SysV shm id " + std::to_string(s.d.id)};
    return false;
  }
  const uint8_t* base = static_cast<const uint8_t*>(addr);
  static const uint8_t zero[kPage] = {};
  uint64_t p = 0;
  const uint64_t n = len / kPage;
  while (p < n) {
    auto wanted = [&](uint64_t i) {
      if (!swapped) return (vec[i] & 1) != 0;
      return memcmp(base + i * kPage, zero, kPage) != 0;
    };
    if (!wanted(p)) {
      p++;
      continue;
    }
    uint64_t q = p + 1;
    while (q < n && wanted(q)) q++;
    Run r;
    r.off = p * kPage;
    r.bytes.assign(base + p * kPage, base + q * kPage);
    s.runs.push_back(std::move(r));
    p = q;
  }
  shmdt(addr);
  return true;
}

const char* const kSysctls[] = {
    "kernel/sem", "kernel/msgmax", "kernel/msgmnb", "kernel/auto_msgmni", "kernel/msgmni",
    "kernel/shmmax", "kernel/shmall", "kernel/shmmni", "kernel/shm_rmid_forced",
    "fs/mqueue/queues_max", "fs/mqueue/msg_max", "fs/mqueue/msgsize_max", "fs/mqueue/msg_default",
    "fs/mqueue/msgsize_default", "kernel/msg_next_id", "kernel/sem_next_id", "kernel/shm_next_id",
};

struct Dumped {
  std::vector<std::pair<std::string, std::string>> sysctls;
  std::vector<ShmSeg> shm;
  std::vector<SemSet> sem;
  std::vector<MsgQueue> msg;
};

void DumpAll(Dumped& out, NsFailure& f) {
  for (const char* name : kSysctls) {
    std::string v;
    int err = 0;
    if (ReadSysctl(name, v, err)) out.sysctls.emplace_back(name, v);
    else if (err != ENOENT) {
      f = {err, "read", std::string("/proc/sys/") + name};
      return;
    }
  }
  // Shared memory segments.
  struct shm_info si;
  int maxid = shmctl(0, SHM_INFO, reinterpret_cast<struct shmid_ds*>(&si));
  if (maxid < 0) {
    f = {errno, "shmctl", "SHM_INFO"};
    return;
  }
  bool swapped = si.shm_swp != 0;
  for (int i = 0; i <= maxid; i++) {
    struct shmid_ds ds;
    int id = shmctl(i, SHM_STAT, &ds);
    if (id < 0) {
      if (errno == EINVAL) continue;
      f = {errno, "shmctl", "SHM_STAT index " + std::to_string(i)};
      return;
    }
    ShmSeg s;
    FillDesc(s.d, id, ds.shm_perm);
    s.size = ds.shm_segsz;
    s.nattch = static_cast<uint32_t>(ds.shm_nattch);
    if (!DumpShmPages(s, swapped, f)) return;
    out.shm.push_back(std::move(s));
  }
  if (out.shm.size() != static_cast<size_t>(si.used_ids)) {
    f = {EAGAIN, "shmctl", "SHM_STAT found " + std::to_string(out.shm.size()) + " of " + std::to_string(si.used_ids) + " segments"};
    return;
  }
  // Semaphore sets.
  struct seminfo sinfo;
  SemUn arg;
  arg.info = &sinfo;
  maxid = semctl(0, 0, SEM_INFO, arg);
  if (maxid < 0) {
    f = {errno, "semctl", "SEM_INFO"};
    return;
  }
  for (int i = 0; i <= maxid; i++) {
    struct semid_ds ds;
    SemUn a;
    a.buf = &ds;
    int id = semctl(i, 0, SEM_STAT, a);
    if (id < 0) {
      if (errno == EINVAL) continue;
      f = {errno, "semctl", "SEM_STAT index " + std::to_string(i)};
      return;
    }
    SemSet s;
    FillDesc(s.d, id, ds.sem_perm);
    s.values.resize(ds.sem_nsems);
    SemUn v;
    v.array = s.values.data();
    if (semctl(id, 0, GETALL, v) < 0) {
      f = {errno, "semctl", "GETALL id " + std::to_string(id)};
      return;
    }
    out.sem.push_back(std::move(s));
  }
  if (out.sem.size() != static_cast<size_t>(sinfo.semusz)) {
    f = {EAGAIN, "semctl", "SEM_STAT found " + std::to_string(out.sem.size()) + " of " + std::to_string(sinfo.semusz) + " sets"};
    return;
  }
  // Message queues, each message copied (MSG_COPY) and left queued.
  struct msginfo minfo;
  maxid = msgctl(0, MSG_INFO, reinterpret_cast<struct msqid_ds*>(&minfo));
  if (maxid < 0) {
    f = {errno, "msgctl", "MSG_INFO"};
    return;
  }
  std::string mm;
  int err = 0;
  if (!ReadSysctl("kernel/msgmax", mm, err)) {
    f = {err, "read", "/proc/sys/kernel/msgmax"};
    return;
  }
  size_t msgmax = static_cast<size_t>(strtoul(mm.c_str(), nullptr, 10));
  std::vector<uint8_t> buf(sizeof(long) + msgmax + 8);
  for (int i = 0; i <= maxid; i++) {
    struct msqid_ds ds;
    int id = msgctl(i, MSG_STAT, &ds);
    if (id < 0) {
      if (errno == EINVAL) continue;
      f = {errno, "msgctl", "MSG_STAT index " + std::to_string(i)};
      return;
    }
    MsgQueue q;
    FillDesc(q.d, id, ds.msg_perm);
    q.qbytes = static_cast<uint32_t>(ds.msg_qbytes);
    for (unsigned long k = 0; k < ds.msg_qnum; k++) {
      ssize_t n = msgrcv(id, buf.data(), msgmax, static_cast<long>(k), IPC_NOWAIT | MSG_COPY);
      if (n < 0) {
        f = {errno, "msgrcv", "MSG_COPY message " + std::to_string(k) + " of queue id " + std::to_string(id)};
        return;
      }
      Msg m;
      long t;
      memcpy(&t, buf.data(), sizeof t);
      m.mtype = t;
      m.bytes.assign(buf.data() + sizeof(long), buf.data() + sizeof(long) + n);
      q.msgs.push_back(std::move(m));
    }
    out.msg.push_back(std::move(q));
  }
  if (out.msg.size() != static_cast<size_t>(minfo.msgpool)) {
    f = {EAGAIN, "msgctl", "MSG_STAT found " + std::to_string(out.msg.size()) + " of " + std::to_string(minfo.msgpool) + " queues"};
  }
}

Napi::Object DescObject(Napi::Env env, const Desc& d) {
  Napi::Object o = Napi::Object::New(env);
  o.Set("id", Napi::Number::New(env, d.id));
  o.Set("key", Napi::Number::New(env, d.key));
  o.Set("uid", Napi::Number::New(env, d.uid));
  o.Set("gid", Napi::Number::New(env, d.gid));
  o.Set("cuid", Napi::Number::New(env, d.cuid));
  o.Set("cgid", Napi::Number::New(env, d.cgid));
  o.Set("mode", Napi::Number::New(env, d.mode));
  return o;
}

// sysvIpcDump(nsFd): everything SysV of the IPC namespace nsFd refers to.
Napi::Value SysvIpcDump(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int nsFd = ArgFd(info, 0, "nsFd");
  Dumped d;
  NsFailure f = InNamespace(nsFd, [&](NsFailure& ff) { DumpAll(d, ff); });
  ThrowIfFailed(env, f);
  Napi::Object out = Napi::Object::New(env);
  Napi::Object sc = Napi::Object::New(env);
  for (auto& [k, v] : d.sysctls) sc.Set(k, Napi::String::New(env, v));
  out.Set("sysctls", sc);
  Napi::Array shm = Napi::Array::New(env, d.shm.size());
  for (size_t i = 0; i < d.shm.size(); i++) {
    auto& s = d.shm[i];
    Napi::Object o = Napi::Object::New(env);
    o.Set("desc", DescObject(env, s.d));
    o.Set("size", Napi::BigInt::New(env, s.size));
    o.Set("nattch", Napi::Number::New(env, s.nattch));
    Napi::Array runs = Napi::Array::New(env, s.runs.size());
    for (size_t k = 0; k < s.runs.size(); k++) {
      Napi::Object r = Napi::Object::New(env);
      r.Set("off", Napi::BigInt::New(env, s.runs[k].off));
      r.Set("data", Napi::Buffer<uint8_t>::Copy(env, s.runs[k].bytes.data(), s.runs[k].bytes.size()));
      runs.Set(k, r);
    }
    o.Set("runs", runs);
    shm.Set(i, o);
  }
  out.Set("shm", shm);
  Napi::Array sem = Napi::Array::New(env, d.sem.size());
  for (size_t i = 0; i < d.sem.size(); i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("desc", DescObject(env, d.sem[i].d));
    Napi::Array v = Napi::Array::New(env, d.sem[i].values.size());
    for (size_t k = 0; k < d.sem[i].values.size(); k++) v.Set(k, Napi::Number::New(env, d.sem[i].values[k]));
    o.Set("values", v);
    sem.Set(i, o);
  }
  out.Set("sem", sem);
  Napi::Array msg = Napi::Array::New(env, d.msg.size());
  for (size_t i = 0; i < d.msg.size(); i++) {
    Napi::Object o = Napi::Object::New(env);
    o.Set("desc", DescObject(env, d.msg[i].d));
    o.Set("qbytes", Napi::Number::New(env, d.msg[i].qbytes));
    Napi::Array ms = Napi::Array::New(env, d.msg[i].msgs.size());
    for (size_t k = 0; k < d.msg[i].msgs.size(); k++) {
      Napi::Object m = Napi::Object::New(env);
      m.Set("mtype", Napi::BigInt::New(env, d.msg[i].msgs[k].mtype));
      m.Set("data", Napi::Buffer<uint8_t>::Copy(env, d.msg[i].msgs[k].bytes.data(), d.msg[i].msgs[k].bytes.size()));
      ms.Set(k, m);
    }
    o.Set("messages", ms);
    msg.Set(i, o);
  }
  out.Set("msg", msg);
  return out;
}

uint32_t U32(Napi::Env env, Napi::Object o, const char* k) {
  Napi::Value v = o.Get(k);
  if (!v.IsNumber()) throw Napi::TypeError::New(env, std::string(k) + " must be a number");
  return v.As<Napi::Number>().Uint32Value();
}

Desc ArgDesc(Napi::Env env, Napi::Object o) {
  Napi::Value dv = o.Get("desc");
  if (!dv.IsObject()) throw Napi::TypeError::New(env, "desc must be an object");
  Napi::Object d = dv.As<Napi::Object>();
  Desc r;
  r.id = static_cast<int32_t>(U32(env, d, "id"));
  r.key = U32(env, d, "key");
  r.uid = U32(env, d, "uid");
  r.gid = U32(env, d, "gid");
  r.mode = U32(env, d, "mode");
  return r;
}

uint64_t BigU64(Napi::Env env, Napi::Value v, const char* what) {
  if (!v.IsBigInt()) throw Napi::TypeError::New(env, std::string(what) + " must be a bigint");
  bool lossless = false;
  uint64_t r = v.As<Napi::BigInt>().Uint64Value(&lossless);
  if (!lossless) throw Napi::RangeError::New(env, std::string(what) + " does not fit in 64 bits");
  return r;
}

Napi::Array ArrayField(Napi::Env env, Napi::Object o, const char* k) {
  Napi::Value v = o.Get(k);
  if (!v.IsArray()) throw Napi::TypeError::New(env, std::string(k) + " must be an array");
  return v.As<Napi::Array>();
}

// Asks for the next id of a kind (kernel/<kind>_next_id), so the object is created with its dumped id.
bool NextId(const char* kind, int32_t id, NsFailure& f) {
  int err = 0;
  std::string name = std::string("kernel/") + kind + "_next_id";
  if (!WriteSysctl(name, std::to_string(id), err)) {
    f = {err, "write", "/proc/sys/" + name};
    return false;
  }
  return true;
}

bool SameId(const char* what, int got, const Desc& d, NsFailure& f) {
  if (got == d.id) return true;
  f = {EEXIST, what, "got id " + std::to_string(got) + " instead of " + std::to_string(d.id)};
  return false;
}

void RestoreAll(const std::vector<std::pair<std::string, std::string>>& sysctls, const std::vector<ShmSeg>& shm,
                const std::vector<MsgQueue>& msg, const std::vector<SemSet>& sem, NsFailure& f) {
  // The namespace's limits first (CRIU's order: variables, shm, msg, sem).
  for (auto& [k, v] : sysctls) {
    int err = 0;
    // Not writable in this namespace (EACCES): left as they are, as CRIU does.
    if (!WriteSysctl(k, v, err) && err != EACCES) {
      f = {err, "write", "/proc/sys/" + k + " (" + v + ")"};
      return;
    }
  }
  for (const ShmSeg& s : shm) {
    std::string what = "SysV shm id " + std::to_string(s.d.id);
    if (!NextId("shm", s.d.id, f)) return;
    int id = shmget(static_cast<key_t>(s.d.key), s.size, static_cast<int>(s.d.mode & 0777) | IPC_CREAT | IPC_EXCL);
    if (id < 0) {
      f = {errno, "shmget", what};
      return;
    }
    if (!SameId("shmget", id, s.d, f)) return;
    struct shmid_ds ds;
    if (shmctl(id, IPC_STAT, &ds) < 0) {
      f = {errno, "shmctl", "IPC_STAT " + what};
      return;
    }
    ds.shm_perm.uid = s.d.uid;
    ds.shm_perm.gid = s.d.gid;
    if (shmctl(id, IPC_SET, &ds) < 0) {
      f = {errno, "shmctl", "IPC_SET " + what};
      return;
    }
    if (s.runs.empty()) continue;
    void* addr = shmat(id, nullptr, 0);
    if (addr == reinterpret_cast<void*>(-1)) {
      f = {errno, "shmat", what};
      return;
    }
    uint64_t len = (s.size + kPage - 1) & ~(kPage - 1);
    for (const Run& r : s.runs) {
      if (r.off > len || r.len > len - r.off) {
        shmdt(addr);
        f = {EINVAL, "shmat", what + ": contents at " + std::to_string(r.off) + " (+" + std::to_string(r.len) + ") past its end"};
        return;
      }
      memcpy(static_cast<uint8_t*>(addr) + r.off, r.data, r.len);
    }
    shmdt(addr);
  }
  for (const MsgQueue& q : msg) {
    std::string what = "SysV msg queue id " + std::to_string(q.d.id);
    if (!NextId("msg", q.d.id, f)) return;
    int id = msgget(static_cast<key_t>(q.d.key), static_cast<int>(q.d.mode & 0777) | IPC_CREAT | IPC_EXCL);
    if (id < 0) {
      f = {errno, "msgget", what};
      return;
    }
    if (!SameId("msgget", id, q.d, f)) return;
    struct msqid_ds ds;
    if (msgctl(id, IPC_STAT, &ds) < 0) {
      f = {errno, "msgctl", "IPC_STAT " + what};
      return;
    }
    ds.msg_perm.uid = q.d.uid;
    ds.msg_perm.gid = q.d.gid;
    // A limit below the namespace's default is kept (raising it above msgmnb would need CAP_SYS_RESOURCE).
    if (q.qbytes && q.qbytes < ds.msg_qbytes) ds.msg_qbytes = q.qbytes;
    if (msgctl(id, IPC_SET, &ds) < 0) {
      f = {errno, "msgctl", "IPC_SET " + what};
      return;
    }
    std::vector<uint8_t> buf;
    for (size_t k = 0; k < q.msgs.size(); k++) {
      const Msg& m = q.msgs[k];
      buf.resize(sizeof(long) + m.len);
      long t = static_cast<long>(m.mtype);
      memcpy(buf.data(), &t, sizeof t);
      if (m.len) memcpy(buf.data() + sizeof(long), m.data, m.len);
      if (msgsnd(id, buf.data(), m.len, IPC_NOWAIT) < 0) {
        f = {errno, "msgsnd", "message " + std::to_string(k) + " of " + what};
        return;
      }
    }
  }
  for (const SemSet& s : sem) {
    std::string what = "SysV semaphore set id " + std::to_string(s.d.id);
    if (!NextId("sem", s.d.id, f)) return;
    int id = semget(static_cast<key_t>(s.d.key), static_cast<int>(s.values.size()), static_cast<int>(s.d.mode & 0777) | IPC_CREAT | IPC_EXCL);
    if (id < 0) {
      f = {errno, "semget", what};
      return;
    }
    if (!SameId("semget", id, s.d, f)) return;
    struct semid_ds ds;
    SemUn a;
    a.buf = &ds;
    if (semctl(id, 0, IPC_STAT, a) < 0) {
      f = {errno, "semctl", "IPC_STAT " + what};
      return;
    }
    ds.sem_perm.uid = s.d.uid;
    ds.sem_perm.gid = s.d.gid;
    if (semctl(id, 0, IPC_SET, a) < 0) {
      f = {errno, "semctl", "IPC_SET " + what};
      return;
    }
    std::vector<uint16_t> vals = s.values;
    SemUn v;
    v.array = vals.data();
    if (!vals.empty() && semctl(id, 0, SETALL, v) < 0) {
      f = {errno, "semctl", "SETALL " + what};
      return;
    }
  }
}

// sysvIpcRestore(nsFd, { sysctls: [name, value][], shm, msg, sem }): creates
// every object with its dumped id, key, mode, owner and contents.
Napi::Value SysvIpcRestore(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int nsFd = ArgFd(info, 0, "nsFd");
  if (info.Length() < 2 || !info[1].IsObject()) throw Napi::TypeError::New(env, "spec must be an object");
  Napi::Object spec = info[1].As<Napi::Object>();
  std::vector<std::pair<std::string, std::string>> sysctls;
  Napi::Array sc = ArrayField(env, spec, "sysctls");
  for (uint32_t i = 0; i < sc.Length(); i++) {
    Napi::Value e = sc.Get(i);
    if (!e.IsArray() || e.As<Napi::Array>().Length() != 2) throw Napi::TypeError::New(env, "sysctls entries must be [name, value]");
    std::string k = e.As<Napi::Array>().Get(0u).ToString().Utf8Value();
    if (k.find("..") != std::string::npos || k.empty() || k[0] == '/') throw Napi::RangeError::New(env, "bad sysctl name " + k);
    sysctls.emplace_back(k, e.As<Napi::Array>().Get(1u).ToString().Utf8Value());
  }
  std::vector<ShmSeg> shm;
  Napi::Array sa = ArrayField(env, spec, "shm");
  for (uint32_t i = 0; i < sa.Length(); i++) {
    Napi::Object o = sa.Get(i).As<Napi::Object>();
    ShmSeg s;
    s.d = ArgDesc(env, o);
    s.size = BigU64(env, o.Get("size"), "size");
    Napi::Array runs = ArrayField(env, o, "runs");
    for (uint32_t k = 0; k < runs.Length(); k++) {
      Napi::Object r = runs.Get(k).As<Napi::Object>();
      Napi::Value dv = r.Get("data");
      if (!dv.IsBuffer()) throw Napi::TypeError::New(env, "runs[].data must be a Buffer");
      Run run;
      run.off = BigU64(env, r.Get("off"), "runs[].off");
      run.data = dv.As<Napi::Buffer<uint8_t>>().Data();
      run.len = dv.As<Napi::Buffer<uint8_t>>().Length();
      s.runs.push_back(std::move(run));
    }
    shm.push_back(std::move(s));
  }
  std::vector<MsgQueue> msg;
  Napi::Array ma = ArrayField(env, spec, "msg");
  for (uint32_t i = 0; i < ma.Length(); i++) {
    Napi::Object o = ma.Get(i).As<Napi::Object>();
    MsgQueue q;
    q.d = ArgDesc(env, o);
    q.qbytes = U32(env, o, "qbytes");
    Napi::Array ms = ArrayField(env, o, "messages");
    for (uint32_t k = 0; k < ms.Length(); k++) {
      Napi::Object m = ms.Get(k).As<Napi::Object>();
      Napi::Value dv = m.Get("data");
      if (!dv.IsBuffer()) throw Napi::TypeError::New(env, "messages[].data must be a Buffer");
      Msg mm;
      mm.mtype = static_cast<int64_t>(BigU64(env, m.Get("mtype"), "mtype"));
      if (mm.mtype <= 0) throw Napi::RangeError::New(env, "mtype must be > 0");
      mm.data = dv.As<Napi::Buffer<uint8_t>>().Data();
      mm.len = dv.As<Napi::Buffer<uint8_t>>().Length();
      q.msgs.push_back(std::move(mm));
    }
    msg.push_back(std::move(q));
  }
  std::vector<SemSet> sem;
  Napi::Array sma = ArrayField(env, spec, "sem");
  for (uint32_t i = 0; i < sma.Length(); i++) {
    Napi::Object o = sma.Get(i).As<Napi::Object>();
    SemSet s;
    s.d = ArgDesc(env, o);
    Napi::Array v = ArrayField(env, o, "values");
    for (uint32_t k = 0; k < v.Length(); k++) {
      Napi::Value x = v.Get(k);
      if (!x.IsNumber()) throw Napi::TypeError::New(env, "values[] must be numbers");
      uint32_t n = x.As<Napi::Number>().Uint32Value();
      if (n > 0xffff) throw Napi::RangeError::New(env, "semaphore value " + std::to_string(n) + " is above 65535");
      s.values.push_back(static_cast<uint16_t>(n));
    }
    if (s.values.empty()) throw Napi::RangeError::New(env, "a semaphore set needs at least one semaphore");
    sem.push_back(std::move(s));
  }
  NsFailure f = InNamespace(nsFd, [&](NsFailure& ff) { RestoreAll(sysctls, shm, msg, sem, ff); });
  ThrowIfFailed(env, f);
  return env.Undefined();
}

// sysvShmRemove(nsFd, ids): IPC_RMID of segments that were marked for
// removal at dump time (SHM_DEST), once every attach is restored.
Napi::Value SysvShmRemove(const Napi::CallbackInfo& info) {
  Napi::Env env = info.Env();
  int nsFd = ArgFd(info, 0, "nsFd");
  if (info.Length() < 2 || !info[1].IsArray()) throw Napi::TypeError::New(env, "ids must be an array");
  std::vector<int> ids;
  Napi::Array a = info[1].As<Napi::Array>();
  for (uint32_t i = 0; i < a.Length(); i++) ids.push_back(a.Get(i).As<Napi::Number>().Int32Value());
  NsFailure f = InNamespace(nsFd, [&](NsFailure& ff) {
    for (int id : ids) {
      if (shmctl(id, IPC_RMID, nullptr) < 0) {
        ff = {errno, "shmctl", "IPC_RMID SysV shm id " + std::to_string(id)};
        return;
      }
    }
  });
  ThrowIfFailed(env, f);
  return env.Undefined();
}

}  // namespace

void InitSysvIpc(Napi::Env env, Napi::Object exports) {
  exports.Set("sysvIpcDump", Napi::Function::New(env, SysvIpcDump, "sysvIpcDump"));
  exports.Set("sysvIpcRestore", Napi::Function::New(env, SysvIpcRestore, "sysvIpcRestore"));
  exports.Set("sysvShmRemove", Napi::Function::New(env, SysvShmRemove, "sysvShmRemove"));
}

}  // namespace lr
