// Format detection, the rwkv.cpp reader/writer and the native rwkv-lite format (docs/FORMAT.md).
#include "format/format.h"
#include "format/gguf.h"

#include <cstdint>
#include <cstring>
#include <limits>

#include "core/error.h"
#include "core/file_writer.h"
#include "core/hash.h"

namespace rwkvl {

namespace {

constexpr uint32_t kRwkvCppMagic = 0x67676d66;  // "fmgg" on disk, 'ggmf' as a little-endian int
constexpr char kNativeMagic[8] = {'R', 'W', 'K', 'V', 'L', 'I', 'T', 'E'};
constexpr uint32_t kNativeVersion = 1;
constexpr uint64_t kNativeAlign = 64;
constexpr uint64_t kMaxHeaderBytes = 16ull << 20;  // real headers are KiBs (a few hundred bytes a tensor)
constexpr int kMaxHeaderDepth = 32;                 // real headers nest 6 levels (passes records)

template <typename T>
T load_le(const uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof(T));
  return v;
}

uint64_t align_up(uint64_t x, uint64_t a) { return (x + a - 1) / a * a; }

// Tensor view into the mapped file; copied to an aligned buffer when the file offset is not 64-byte
// aligned (element loads must be aligned for the scalar code and UBSan).
Tensor view_or_copy(const std::shared_ptr<MappedFile>& f, std::string name, DType dt, std::vector<int64_t> shape,
                    uint64_t offset, uint64_t nbytes) {
  if (reinterpret_cast<uintptr_t>(f->data() + offset) % kNativeAlign == 0) {
    Tensor t;
    t.name = std::move(name);
    t.dtype = dt;
    t.shape = std::move(shape);
    t.data = f->data() + offset;
    t.nbytes = static_cast<size_t>(nbytes);
    t.owner = f;
    return t;
  }
  int64_t kept = 0;
  Tensor t = dtype_is_masked(dt) && shape.size() == 2 && masked_kept_from_bytes(dt, shape[0], shape[1], nbytes, &kept)
                 ? Tensor::alloc_masked(std::move(name), dt, shape[0], shape[1], kept)
                 : Tensor::alloc(std::move(name), dt, std::move(shape));
  RWKVL_CHECK(t.nbytes == nbytes);
  std::memcpy(t.mutable_data(), f->data() + offset, t.nbytes);
  return t;
}

}  // namespace

bool verify_on_load(const std::string& name) {
  return name.find(".ffn.pred.") != std::string::npos || name.find(".ffn.perm") != std::string::npos ||
         name.find(".ffn.freq") != std::string::npos || name == "head.perm" || name.rfind("head.cluster.", 0) == 0;
}

const char* file_kind_name(FileKind k) {
  switch (k) {
    case FileKind::kRwkvCpp: return "rwkv.cpp";
    case FileKind::kPth: return "pth";
    case FileKind::kSafetensors: return "safetensors";
    case FileKind::kNative: return "native";
    case FileKind::kGguf: return "gguf";
    default: return "unknown";
  }
}

FileKind detect_file_kind(const MappedFile& f) {
  const uint8_t* p = f.data();
  const size_t n = f.size();
  if (n >= 8 && std::memcmp(p, kNativeMagic, 8) == 0) return FileKind::kNative;
  if (n >= 4 && load_le<uint32_t>(p) == kRwkvCppMagic) return FileKind::kRwkvCpp;
  if (n >= 4 && p[0] == 'P' && p[1] == 'K' && p[2] == 3 && p[3] == 4) return FileKind::kPth;
  if (is_gguf(f)) return FileKind::kGguf;
  // safetensors: u64 header length, then a JSON object starting with '{'.
  if (n >= 10) {
    const uint64_t hl = load_le<uint64_t>(p);
    if (hl >= 2 && hl <= n - 8 && p[8] == '{') return FileKind::kSafetensors;
  }
  return FileKind::kUnknown;
}

RawCheckpoint read_checkpoint(const std::string& path) { return read_checkpoint(MappedFile::open(path)); }

RawCheckpoint read_checkpoint(std::shared_ptr<MappedFile> f) {
  const std::string& path = f->path();
  switch (detect_file_kind(*f)) {
    case FileKind::kRwkvCpp: return read_rwkvcpp(f);
    case FileKind::kPth: return read_pth(f);
    case FileKind::kSafetensors: return read_safetensors(f);
    case FileKind::kNative: return read_native(f);
    case FileKind::kGguf: return read_gguf(f);
    default: break;
  }
  RWKVL_FAIL(kFormat,
             "%s: not a model file this tool reads (expected an rwkv.cpp .bin, a PyTorch .pth zip, safetensors, GGUF or "
             "a native rwkv-lite file; %zu bytes, unrecognised first bytes)",
             path.c_str(), f->size());
}

// ------------------------------------------------------------------------------------------ rwkv.cpp

RawCheckpoint read_rwkvcpp(std::shared_ptr<MappedFile> f) {
  const char* path = f->path().c_str();
  const uint8_t* p = f->data();
  const size_t n = f->size();
  if (n < 24) RWKVL_FAIL(kFormat, "%s: truncated rwkv.cpp header (%zu bytes)", path, n);
  if (load_le<uint32_t>(p) != kRwkvCppMagic) RWKVL_FAIL(kFormat, "%s: bad rwkv.cpp magic", path);
  const int32_t version = load_le<int32_t>(p + 4);
  if (version != 100 && version != 101)
    RWKVL_FAIL(kUnsupported, "%s: rwkv.cpp file version %d is not supported (100 and 101 are)", path, version);
  RawCheckpoint raw;
  raw.kind = FileKind::kRwkvCpp;
  raw.file = f;
  raw.meta["version"] = version;
  raw.meta["n_vocab"] = load_le<int32_t>(p + 8);
  raw.meta["n_embed"] = load_le<int32_t>(p + 12);
  raw.meta["n_layer"] = load_le<int32_t>(p + 16);
  raw.meta["data_type"] = load_le<int32_t>(p + 20);
  uint64_t off = 24;
  while (off < n) {
    if (!f->contains(off, 12)) RWKVL_FAIL(kFormat, "%s: truncated tensor header at byte %llu", path, static_cast<unsigned long long>(off));
    const int32_t ndim = load_le<int32_t>(p + off), klen = load_le<int32_t>(p + off + 4), dt = load_le<int32_t>(p + off + 8);
    off += 12;
    if (ndim < 1 || ndim > 4) RWKVL_FAIL(kFormat, "%s: tensor at byte %llu has %d dimensions", path, static_cast<unsigned long long>(off - 12), ndim);
    if (klen < 1 || klen > 1024) RWKVL_FAIL(kFormat, "%s: tensor at byte %llu has a name of %d bytes", path, static_cast<unsigned long long>(off - 12), klen);
    if (!f->contains(off, 4ull * ndim + klen)) RWKVL_FAIL(kFormat, "%s: truncated tensor header at byte %llu", path, static_cast<unsigned long long>(off));
    std::vector<int64_t> shape(static_cast<size_t>(ndim));
    for (int i = 0; i < ndim; ++i) shape[static_cast<size_t>(ndim - 1 - i)] = load_le<int32_t>(p + off + 4ull * i);  // ggml order is reversed
    off += 4ull * ndim;
    std::string name(reinterpret_cast<const char*>(p + off), static_cast<size_t>(klen));
    off += static_cast<uint64_t>(klen);
    DType dtype;
    switch (dt) {
      case 0: dtype = DType::kF32; break;
      case 1: dtype = DType::kF16; break;
      case 8: dtype = DType::kQ5_1; break;
      case 2: case 3: case 7: case 9:
        RWKVL_FAIL(kUnsupported, "%s: tensor '%s' uses rwkv.cpp data type %d (Q4_0/Q4_1/Q5_0/Q8_0); only FP32, FP16 and Q5_1 are supported",
                   path, name.c_str(), dt);
      default: RWKVL_FAIL(kFormat, "%s: tensor '%s' has unknown data type %d", path, name.c_str(), dt);
    }
    if (dtype == DType::kQ5_1 && version == 100)
      RWKVL_FAIL(kUnsupported, "%s: quantized tensors of file version 100 predate ggml's 2023-05 format change; re-quantize with a current rwkv.cpp", path);
    const int64_t numel = checked_numel(shape, name);
    const size_t nbytes = dtype_bytes(dtype, static_cast<uint64_t>(numel));
    if (nbytes == std::numeric_limits<size_t>::max())
      RWKVL_FAIL(kFormat, "%s: tensor '%s' has %lld elements, not a whole number of %s blocks", path, name.c_str(), static_cast<long long>(numel), dtype_name(dtype));
    if (!f->contains(off, nbytes))
      RWKVL_FAIL(kFormat, "%s: tensor '%s' needs %zu bytes at offset %llu but the file has %zu bytes (truncated?)", path, name.c_str(), nbytes,
                 static_cast<unsigned long long>(off), n);
    raw.tensors.push_back(view_or_copy(f, name, dtype, shape, off, nbytes));
    off += nbytes;
  }
  if (raw.tensors.empty()) RWKVL_FAIL(kFormat, "%s: rwkv.cpp file has no tensors", path);
  return raw;
}

void write_rwkvcpp(const std::string& path, const std::vector<Tensor>& tensors, int n_vocab, int n_embed, int n_layer) {
  FileWriter w(path);
  bool any_f16 = false;
  for (const Tensor& t : tensors) any_f16 |= t.dtype == DType::kF16;
  const int32_t hdr[6] = {static_cast<int32_t>(kRwkvCppMagic), 101, n_vocab, n_embed, n_layer, any_f16 ? 1 : 0};
  w.write(hdr, sizeof hdr);
  for (const Tensor& t : tensors) {
    int32_t dt;
    if (t.dtype == DType::kF32) dt = 0;
    else if (t.dtype == DType::kF16) dt = 1;
    else RWKVL_FAIL(kUnsupported, "rwkv.cpp writer: tensor '%s' is %s (only f32/f16)", t.name.c_str(), dtype_name(t.dtype));
    const int32_t h[3] = {static_cast<int32_t>(t.shape.size()), static_cast<int32_t>(t.name.size()), dt};
    w.write(h, sizeof h);
    for (size_t i = t.shape.size(); i-- > 0;) {
      const int32_t d = static_cast<int32_t>(t.shape[i]);
      w.write(&d, 4);
    }
    w.write(t.name.data(), t.name.size());
    w.write(t.data, t.nbytes);
  }
  w.commit();
}

// ------------------------------------------------------------------------------------------ native

RawCheckpoint read_native(std::shared_ptr<MappedFile> f) {
  const char* path = f->path().c_str();
  const uint8_t* p = f->data();
  const size_t n = f->size();
  if (n < 24 || std::memcmp(p, kNativeMagic, 8) != 0) RWKVL_FAIL(kFormat, "%s: truncated or bad native header", path);
  const uint32_t version = load_le<uint32_t>(p + 8);
  const uint32_t align = load_le<uint32_t>(p + 12);
  const uint64_t hlen = load_le<uint64_t>(p + 16);
  if (version != kNativeVersion)
    RWKVL_FAIL(kUnsupported, "%s: native format version %u is not supported (this build reads version %u)", path, version, kNativeVersion);
  if (align != kNativeAlign) RWKVL_FAIL(kFormat, "%s: alignment %u (expected %llu)", path, align, static_cast<unsigned long long>(kNativeAlign));
  if (hlen > kMaxHeaderBytes)
    RWKVL_FAIL(kFormat, "%s: header of %llu bytes exceeds the limit of %llu bytes", path, static_cast<unsigned long long>(hlen),
               static_cast<unsigned long long>(kMaxHeaderBytes));
  if (!f->contains(24, hlen))
    RWKVL_FAIL(kFormat, "%s: header of %llu bytes does not fit in the file (%zu bytes)", path, static_cast<unsigned long long>(hlen), n);
  nlohmann::json j;
  {
    // The depth limit stops a header of nested brackets before it builds a deep (and huge) tree.
    struct TooDeep {};
    try {
      j = nlohmann::json::parse(p + 24, p + 24 + hlen, [](int depth, nlohmann::json::parse_event_t ev, nlohmann::json&) {
        if ((ev == nlohmann::json::parse_event_t::object_start || ev == nlohmann::json::parse_event_t::array_start) &&
            depth >= kMaxHeaderDepth)
          throw TooDeep{};
        return true;
      });
    } catch (const TooDeep&) {
      RWKVL_FAIL(kFormat, "%s: header nests deeper than %d levels", path, kMaxHeaderDepth);
    } catch (const nlohmann::json::exception& e) {
      RWKVL_FAIL(kFormat, "%s: header is not valid JSON: %s", path, e.what());
    }
  }
  const uint64_t data_start = align_up(24 + hlen, kNativeAlign);
  RawCheckpoint raw;
  raw.kind = FileKind::kNative;
  raw.file = f;
  // Integer fields must be JSON non-negative integers: 0.5, 1e308 or -1 are refused, never cast.
  auto uint_field = [&](const nlohmann::json& v, const std::string& name, const char* field, uint64_t max) -> uint64_t {
    if (!v.is_number_unsigned() || v.get<uint64_t>() > max) {
      std::string shown = v.dump();
      if (shown.size() > 40) shown = shown.substr(0, 40) + "...";
      RWKVL_FAIL(kFormat, "%s: tensor '%s': '%s' must be an integer in [0, %llu], got %s", path, name.c_str(), field,
                 static_cast<unsigned long long>(max), shown.c_str());
    }
    return v.get<uint64_t>();
  };
  try {
    if (!j.is_object() || !j.contains("model") || !j["model"].is_object())
      RWKVL_FAIL(kFormat, "%s: header has no 'model' object", path);
    raw.meta = j.at("model");
    if (j.contains("passes")) raw.meta["passes"] = j["passes"];
    raw.meta["checksums"] = nlohmann::json::object();  // tensor name -> "fnv1a64" (for verify_model)
    const nlohmann::json& tl = j.at("tensors");
    if (!tl.is_array()) RWKVL_FAIL(kFormat, "%s: 'tensors' is not an array", path);
    for (const auto& e : tl) {
      if (!e.is_object()) RWKVL_FAIL(kFormat, "%s: an entry of 'tensors' is not an object", path);
      const std::string name = e.at("name").get<std::string>();
      const uint32_t dt = static_cast<uint32_t>(uint_field(e.at("dtype"), name, "dtype", 255));
      if (!dtype_valid(dt)) RWKVL_FAIL(kFormat, "%s: tensor '%s' has unknown dtype %u", path, name.c_str(), dt);
      const nlohmann::json& sj = e.at("shape");
      if (!sj.is_array()) RWKVL_FAIL(kFormat, "%s: tensor '%s': 'shape' is not an array", path, name.c_str());
      if (sj.size() > 8) RWKVL_FAIL(kFormat, "%s: tensor '%s' has %zu dimensions", path, name.c_str(), sj.size());
      std::vector<int64_t> shape;
      for (const auto& d : sj)
        shape.push_back(static_cast<int64_t>(uint_field(d, name, "shape", static_cast<uint64_t>(INT64_MAX))));
      const uint64_t off = uint_field(e.at("offset"), name, "offset", UINT64_MAX);
      const uint64_t nb = uint_field(e.at("nbytes"), name, "nbytes", UINT64_MAX);
      if (e.contains("fnv1a64")) {
        const nlohmann::json& h = e["fnv1a64"];
        bool hex = h.is_string() && h.get_ref<const std::string&>().size() == 16;
        if (hex)
          for (char c : h.get_ref<const std::string&>()) hex = hex && ((c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'));
        if (!hex) RWKVL_FAIL(kFormat, "%s: tensor '%s': 'fnv1a64' must be 16 lowercase hex digits", path, name.c_str());
        raw.meta["checksums"][name] = h;
      }
      const int64_t numel = checked_numel(shape, name);
      int64_t kept = 0;
      if (dtype_is_masked(static_cast<DType>(dt))) {  // rows x cols with value slots that follow from the byte size
        if (shape.size() != 2)
          RWKVL_FAIL(kFormat, "%s: tensor '%s' is %s with %zu dimensions (a masked matrix has 2)", path, name.c_str(),
                     dtype_name(static_cast<DType>(dt)), shape.size());
        if (!masked_kept_from_bytes(static_cast<DType>(dt), shape[0], shape[1], nb, &kept))
          RWKVL_FAIL(kFormat, "%s: tensor '%s' (%s [%lld, %lld]) has %llu bytes: no mask-and-values layout has that size",
                     path, name.c_str(), dtype_name(static_cast<DType>(dt)), static_cast<long long>(shape[0]),
                     static_cast<long long>(shape[1]), static_cast<unsigned long long>(nb));
      } else if (const size_t expect = dtype_bytes(static_cast<DType>(dt), static_cast<uint64_t>(numel)); expect != nb) {
        RWKVL_FAIL(kFormat, "%s: tensor '%s' has %llu bytes, its shape needs %zu", path, name.c_str(),
                   static_cast<unsigned long long>(nb), expect);
      }
      if (off % kNativeAlign != 0 || off > n || !f->contains(data_start + off, nb))
        RWKVL_FAIL(kFormat, "%s: tensor '%s' at offset %llu (+%llu bytes) lies outside the file (truncated?)", path, name.c_str(),
                   static_cast<unsigned long long>(off), static_cast<unsigned long long>(nb));
      // Small blocks whose corruption would not show as a shape or range error (activation predictors,
      // neuron order) are verified against their checksum on every load; big weights only by `rwkv-lite verify`
      // (verify_model, src/model/verify.h).
      if (e.contains("fnv1a64") && verify_on_load(name)) {
        const std::string want = e.at("fnv1a64").get<std::string>();
        if (hex64(fnv1a64(f->data() + data_start + off, nb)) != want)
          RWKVL_FAIL(kFormat, "%s: tensor '%s' is corrupt (FNV-1a checksum mismatch, expected %s)", path, name.c_str(),
                     want.c_str());
      }
      raw.tensors.push_back(view_or_copy(f, name, static_cast<DType>(dt), shape, data_start + off, nb));
    }
  } catch (const nlohmann::json::exception& e) {
    RWKVL_FAIL(kFormat, "%s: malformed header: %s", path, e.what());
  }
  return raw;
}

void write_native(const std::string& path, const std::vector<Tensor>& tensors, const nlohmann::json& meta,
                  const std::function<void(const Tensor&)>& read) {
  nlohmann::json j;
  j["format"] = "rwkv-lite";
  j["model"] = meta;
  if (meta.contains("passes")) {
    j["passes"] = meta["passes"];
    j["model"].erase("passes");
  }
  nlohmann::json tl = nlohmann::json::array();
  uint64_t off = 0;
  for (const Tensor& t : tensors) {
    tl.push_back({{"name", t.name},
                  {"dtype", static_cast<uint32_t>(t.dtype)},
                  {"dtype_name", dtype_name(t.dtype)},
                  {"shape", t.shape},
                  {"offset", off},
                  {"nbytes", t.nbytes},
                  {"fnv1a64", hex64(fnv1a64(t.data, t.nbytes))}});
    if (read) read(t);
    off = align_up(off + t.nbytes, kNativeAlign);
  }
  j["tensors"] = tl;
  const std::string header = j.dump();
  FileWriter w(path);
  w.write(kNativeMagic, 8);
  const uint32_t v = kNativeVersion, a = static_cast<uint32_t>(kNativeAlign);
  const uint64_t hl = header.size();
  w.write(&v, 4);
  w.write(&a, 4);
  w.write(&hl, 8);
  w.write(header.data(), header.size());
  w.pad_to(kNativeAlign);
  const uint64_t data_start = w.tell();
  for (const Tensor& t : tensors) {
    w.pad_to(kNativeAlign);
    RWKVL_CHECK(w.tell() - data_start == static_cast<uint64_t>(tl[&t - tensors.data()]["offset"].get<uint64_t>()));
    w.write(t.data, t.nbytes);
    if (read) read(t);
  }
  w.commit();
}

}  // namespace rwkvl
