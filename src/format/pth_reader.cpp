// PyTorch .pth (zip) checkpoints: a plain state dict {name: tensor} saved by torch.save.
// The zip and the pickle are parsed by our own restricted code (zip.h, pickle.h): nothing is executed.
#include <cstring>
#include <unordered_map>

#include "core/error.h"
#include "format/format.h"
#include "format/pickle.h"
#include "format/zip.h"

namespace rwkvl {

namespace {

constexpr int kMinVersion = 1, kMaxVersion = 10;  // torch's supported range of "version" records
// Non-contiguous tensors are copied; together the copies may exceed the file size by at most this
// much (a stride-0 view could otherwise expand a tiny file into gigabytes).
constexpr uint64_t kCopySlack = uint64_t{64} << 20;

bool storage_dtype(const std::string& type, DType* dt) {
  if (type == "FloatStorage") {
    *dt = DType::kF32;
  } else if (type == "HalfStorage") {
    *dt = DType::kF16;
  } else if (type == "BFloat16Storage") {
    *dt = DType::kBF16;
  } else {
    return false;
  }
  return true;
}

std::string dims_str(const std::vector<int64_t>& d) {
  std::string s = "(";
  for (size_t i = 0; i < d.size(); ++i) s += (i ? ", " : "") + std::to_string(d[i]);
  return s + ")";
}

// Copies a strided view into a fresh contiguous tensor.
void gather(const uint8_t* base, const std::vector<int64_t>& size, const std::vector<int64_t>& stride, size_t esz,
            uint8_t* dst) {
  const size_t nd = size.size();
  if (nd == 0) {
    std::memcpy(dst, base, esz);
    return;
  }
  std::vector<int64_t> idx(nd, 0);
  const int64_t inner = size[nd - 1], inner_stride = stride[nd - 1];
  while (true) {
    int64_t off = 0;
    for (size_t k = 0; k + 1 < nd; ++k) off += idx[k] * stride[k];
    const uint8_t* src = base + static_cast<size_t>(off) * esz;
    if (inner_stride == 1) {
      std::memcpy(dst, src, static_cast<size_t>(inner) * esz);
      dst += static_cast<size_t>(inner) * esz;
    } else {
      for (int64_t j = 0; j < inner; ++j, dst += esz)
        std::memcpy(dst, src + static_cast<size_t>(j * inner_stride) * esz, esz);
    }
    size_t k = nd - 1;
    while (k > 0) {
      if (++idx[k - 1] < size[k - 1]) break;
      idx[k - 1] = 0;
      --k;
    }
    if (k == 0) return;
  }
}

int parse_version(const uint8_t* p, size_t n, const char* path) {
  size_t len = n;
  while (len > 0 && (p[len - 1] == '\n' || p[len - 1] == '\r' || p[len - 1] == ' ')) --len;
  if (len == 0 || len > 9) RWKVL_FAIL(kFormat, "%s: the archive's version record is not a number", path);
  int v = 0;
  for (size_t i = 0; i < len; ++i) {
    if (p[i] < '0' || p[i] > '9') RWKVL_FAIL(kFormat, "%s: the archive's version record is not a number", path);
    v = v * 10 + (p[i] - '0');
  }
  if (v < kMinVersion || v > kMaxVersion)
    RWKVL_FAIL(kUnsupported, "%s: PyTorch archive format version %d is not supported (%d..%d)", path, v, kMinVersion,
               kMaxVersion);
  return v;
}

// The zip entries of one archive, found by their name inside the archive folder ("<prefix>rel").
struct Archive {
  const std::string& path;
  std::string prefix;
  std::unordered_map<std::string, const zip::Entry*> by_name;

  Archive(const std::string& p, const std::vector<zip::Entry>& entries) : path(p) {
    const char* pc = path.c_str();
    if (entries.empty()) RWKVL_FAIL(kFormat, "%s: empty zip archive, not a PyTorch checkpoint", pc);
    const size_t slash = entries[0].name.find('/');
    if (slash == std::string::npos || slash == 0)
      RWKVL_FAIL(kFormat, "%s: zip entry '%s' is not inside an archive folder; not a PyTorch checkpoint", pc,
                 entries[0].name.c_str());
    prefix = entries[0].name.substr(0, slash + 1);
    for (const zip::Entry& e : entries) by_name.emplace(e.name, &e);
  }
  const zip::Entry* find(const std::string& rel) const {
    auto it = by_name.find(prefix + rel);
    return it == by_name.end() ? nullptr : it->second;
  }
};

// The version and byteorder records; returns the version.
int read_records(const Archive& a, const uint8_t* base) {
  const char* pc = a.path.c_str();
  const zip::Entry* version = a.find("version");
  if (!version) version = a.find(".data/version");
  if (!version) RWKVL_FAIL(kFormat, "%s: no %sversion record; not a PyTorch checkpoint", pc, a.prefix.c_str());
  if (version->size > 32) RWKVL_FAIL(kFormat, "%s: the archive's version record is not a number", pc);
  const int ver = parse_version(base + version->data_offset, version->size, pc);

  if (const zip::Entry* bo = a.find("byteorder")) {
    const std::string order(reinterpret_cast<const char*>(base + bo->data_offset), bo->size > 16 ? 16 : bo->size);
    if (order == "big") RWKVL_FAIL(kUnsupported, "%s: big-endian checkpoints are not supported", pc);
    if (order != "little") RWKVL_FAIL(kFormat, "%s: invalid byteorder record", pc);
  }
  return ver;
}

// Extent of tensor nm: the last element addressed must lie inside the storage (overflow-checked). Returns
// whether the view is contiguous.
bool check_extent(const char* pc, const char* nm, const pickle::TensorRef& tr, const pickle::StorageRef& sr,
                  int64_t numel) {
  bool contiguous = true;
  if (numel > 0) {
    int64_t last = tr.offset, expect = 1;
    for (size_t k = tr.size.size(); k-- > 0;) {
      int64_t span;
      if (__builtin_mul_overflow(tr.size[k] - 1, tr.stride[k], &span) || __builtin_add_overflow(last, span, &last))
        last = INT64_MAX;
      if (tr.size[k] != 1 && tr.stride[k] != expect) contiguous = false;
      expect *= tr.size[k];  // <= numel, cannot overflow
    }
    if (last >= sr.numel)
      RWKVL_FAIL(kFormat,
                 "%s: tensor '%s' (storage_offset %lld, size %s, stride %s) reaches past the end of storage "
                 "'%s' (%lld elements)",
                 pc, nm, static_cast<long long>(tr.offset), dims_str(tr.size).c_str(), dims_str(tr.stride).c_str(),
                 sr.key.c_str(), static_cast<long long>(sr.numel));
  } else if (tr.offset > sr.numel) {
    RWKVL_FAIL(kFormat, "%s: tensor '%s': storage_offset %lld is past the end of storage '%s' (%lld elements)", pc,
               nm, static_cast<long long>(tr.offset), sr.key.c_str(), static_cast<long long>(sr.numel));
  }
  return contiguous;
}

// Turns the entries of the state dict into tensors: views of the mapping where possible, copies (within a
// budget) of non-contiguous or misaligned ones.
class TensorReader {
 public:
  TensorReader(const Archive& a, const std::shared_ptr<MappedFile>& f)
      : a_(a), pc_(a.path.c_str()), base_(f->data()), copy_budget_(f->size() + kCopySlack), owner_(f, f->data()) {}

  Tensor read(const pickle::Value* key, const pickle::Value* value) {
    if (key->kind != pickle::Kind::kStr)
      RWKVL_FAIL(kFormat, "%s: state dict key of type %s (only str keys are supported)", pc_,
                 pickle::kind_name(key->kind));
    const std::string& name = key->s;
    const char* nm = name.c_str();
    if (value->kind != pickle::Kind::kTensor)
      RWKVL_FAIL(kFormat,
                 "%s: entry '%s' has type %s, not tensor; only plain state dicts (name -> tensor) are supported", pc_,
                 nm, pickle::kind_name(value->kind));
    const pickle::TensorRef& tr = *value->tensor;
    const pickle::StorageRef& sr = *tr.storage;

    DType dt;
    if (!storage_dtype(sr.type, &dt))
      RWKVL_FAIL(kUnsupported,
                 "%s: tensor '%s' is stored as torch.%s; only FloatStorage, HalfStorage and "
                 "BFloat16Storage (f32, f16, bf16) are supported",
                 pc_, nm, sr.type.c_str());
    const size_t esz = dtype_info(dt).block_bytes;
    const zip::Entry* entry = storage(nm, sr, dt, esz);

    Tensor t;
    t.name = name;
    t.dtype = dt;
    t.shape = tr.size;
    const int64_t numel = checked_numel(t.shape, a_.path + ": tensor '" + name + "'");
    const bool contiguous = check_extent(pc_, nm, tr, sr, numel);
    t.nbytes = static_cast<size_t>(numel) * esz;
    const uint8_t* src = base_ + entry->data_offset + static_cast<uint64_t>(tr.offset) * esz;
    if (contiguous && reinterpret_cast<uintptr_t>(src) % esz == 0) {
      t.data = src;
      t.owner = owner_;
    } else {
      copied_ += t.nbytes;
      if (copied_ > copy_budget_)
        RWKVL_FAIL(kUnsupported,
                   "%s: non-contiguous tensors (up to '%s') would expand to %llu bytes, more than the file "
                   "size allows",
                   pc_, nm, static_cast<unsigned long long>(copied_));
      Tensor c = Tensor::alloc(name, dt, t.shape);
      if (numel > 0) gather(src, tr.size, tr.stride, esz, static_cast<uint8_t*>(c.mutable_data()));
      t = std::move(c);
    }
    return t;
  }

 private:
  // The storage's zip entry: it must hold exactly numel elements, and every use must agree.
  const zip::Entry* storage(const char* nm, const pickle::StorageRef& sr, DType dt, size_t esz) {
    auto [sit, fresh] = storages_.emplace(sr.key, StorageInfo{&sr, nullptr});
    if (fresh) {
      const zip::Entry* e = a_.find("data/" + sr.key);
      if (!e)
        RWKVL_FAIL(kFormat, "%s: tensor '%s' refers to storage '%s' but there is no %sdata/%s record", pc_, nm,
                   sr.key.c_str(), a_.prefix.c_str(), sr.key.c_str());
      if (static_cast<uint64_t>(sr.numel) > e->size / esz || static_cast<uint64_t>(sr.numel) * esz != e->size)
        RWKVL_FAIL(kFormat, "%s: storage '%s' declares %lld elements of %s but its record holds %llu bytes", pc_,
                   sr.key.c_str(), static_cast<long long>(sr.numel), dtype_name(dt),
                   static_cast<unsigned long long>(e->size));
      sit->second.entry = e;
    } else if (sit->second.ref->type != sr.type || sit->second.ref->numel != sr.numel) {
      RWKVL_FAIL(kFormat, "%s: storage '%s' is used with different types or sizes", pc_, sr.key.c_str());
    }
    return sit->second.entry;
  }

  struct StorageInfo {
    const pickle::StorageRef* ref;
    const zip::Entry* entry;
  };
  const Archive& a_;
  const char* pc_;
  const uint8_t* base_;
  std::unordered_map<std::string, StorageInfo> storages_;
  uint64_t copied_ = 0;
  const uint64_t copy_budget_;
  std::shared_ptr<const void> owner_;
};

}  // namespace

RawCheckpoint read_pth(std::shared_ptr<MappedFile> f) {
  RWKVL_CHECK(f != nullptr);
  const std::string& path = f->path();
  const char* pc = path.c_str();
  const uint8_t* base = f->data();
  std::vector<zip::Entry> entries = zip::read_entries(base, f->size(), path);
  const Archive a(path, entries);

  RawCheckpoint ck;
  ck.kind = FileKind::kPth;
  ck.file = f;
  const int ver = read_records(a, base);

  const zip::Entry* pkl = a.find("data.pkl");
  if (!pkl) RWKVL_FAIL(kFormat, "%s: no %sdata.pkl record; not a PyTorch checkpoint", pc, a.prefix.c_str());
  pickle::Unpickled up = pickle::unpickle(base + pkl->data_offset, pkl->size, path + ": data.pkl");
  const pickle::Value* root = up.root;
  if (root->kind != pickle::Kind::kDict)
    RWKVL_FAIL(kFormat, "%s: data.pkl holds a %s, not a dict of tensors (only plain state dicts are supported)", pc,
               pickle::kind_name(root->kind));

  TensorReader reader(a, f);
  for (const auto& [key, value] : root->entries) ck.tensors.push_back(reader.read(key, value));
  ck.meta["archive"] = a.prefix.substr(0, a.prefix.size() - 1);
  ck.meta["version"] = ver;
  ck.meta["ordered_dict"] = root->ordered;
  return ck;
}

}  // namespace rwkvl
