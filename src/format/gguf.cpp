#include "format/gguf.h"

#include <algorithm>
#include <cmath>
#include <cstring>

#include "core/dtype.h"
#include "core/error.h"
#include "core/file_writer.h"
#include "format/format.h"

namespace rwkvl {

namespace {

constexpr uint8_t kMagic[4] = {'G', 'G', 'U', 'F'};
constexpr uint32_t kMaxDims = 4;        // GGML_MAX_DIMS
constexpr uint64_t kMaxNameBytes = 256; // ggml's tensor name limit is 64; keys are short too
constexpr int kMaxArrayDepth = 2;

// A bounds-checked cursor over the mapped bytes.
class Reader {
 public:
  Reader(const MappedFile& f) : p_(f.data()), n_(f.size()), path_(f.path()) {}
  template <class T>
  T get(const char* what) {
    need(sizeof(T), what);
    T v;
    std::memcpy(&v, p_ + off_, sizeof v);
    off_ += sizeof v;
    return v;
  }
  std::string str(const char* what, uint64_t max_len) {
    const uint64_t len = get<uint64_t>(what);
    if (len > max_len) fail("%s is %llu bytes long (limit %llu)", what, (unsigned long long)len, (unsigned long long)max_len);
    need(len, what);
    std::string s(reinterpret_cast<const char*>(p_ + off_), static_cast<size_t>(len));
    off_ += len;
    return s;
  }
  void need(uint64_t len, const char* what) const {
    if (len > n_ - off_)
      fail("truncated: %s at byte %llu needs %llu bytes, %llu remain", what, (unsigned long long)off_,
           (unsigned long long)len, (unsigned long long)(n_ - off_));
  }
  uint64_t offset() const { return off_; }
  uint64_t remaining() const { return n_ - off_; }
  template <class... A>
  [[noreturn]] void fail(const char* fmt, A... a) const {
    char buf[512];
    std::snprintf(buf, sizeof buf, fmt, a...);
    RWKVL_FAIL(kFormat, "%s: GGUF: %s", path_.c_str(), buf);
  }

 private:
  const uint8_t* p_;
  uint64_t n_;
  uint64_t off_ = 0;
  std::string path_;
};

size_t scalar_bytes(GgufType t) {
  switch (t) {
    case GgufType::kU8: case GgufType::kI8: case GgufType::kBool: return 1;
    case GgufType::kU16: case GgufType::kI16: return 2;
    case GgufType::kU32: case GgufType::kI32: case GgufType::kF32: return 4;
    case GgufType::kU64: case GgufType::kI64: case GgufType::kF64: return 8;
    default: return 0;
  }
}

nlohmann::json read_value(Reader& r, GgufType t, int depth, GgufType* elem_out);

nlohmann::json read_scalar(Reader& r, GgufType t) {
  switch (t) {
    case GgufType::kU8: return r.get<uint8_t>("u8 value");
    case GgufType::kI8: return r.get<int8_t>("i8 value");
    case GgufType::kU16: return r.get<uint16_t>("u16 value");
    case GgufType::kI16: return r.get<int16_t>("i16 value");
    case GgufType::kU32: return r.get<uint32_t>("u32 value");
    case GgufType::kI32: return r.get<int32_t>("i32 value");
    case GgufType::kF32: return r.get<float>("f32 value");
    case GgufType::kBool: {
      const uint8_t b = r.get<uint8_t>("bool value");
      if (b > 1) r.fail("a bool value is %u", b);
      return b != 0;
    }
    case GgufType::kU64: return r.get<uint64_t>("u64 value");
    case GgufType::kI64: return r.get<int64_t>("i64 value");
    case GgufType::kF64: return r.get<double>("f64 value");
    case GgufType::kString: return r.str("string value", r.remaining());
    default: r.fail("unknown metadata value type %u", static_cast<unsigned>(t));
  }
}

nlohmann::json read_value(Reader& r, GgufType t, int depth, GgufType* elem_out) {
  if (t != GgufType::kArray) return read_scalar(r, t);
  if (depth >= kMaxArrayDepth) r.fail("arrays nested deeper than %d", kMaxArrayDepth);
  const auto et = static_cast<GgufType>(r.get<uint32_t>("array element type"));
  const uint64_t count = r.get<uint64_t>("array length");
  // Every element takes at least one byte (strings: 8): a count the rest of the file cannot hold is refused
  // before anything is allocated.
  const uint64_t min_bytes = et == GgufType::kString ? 8 : et == GgufType::kArray ? 12 : scalar_bytes(et);
  if (min_bytes == 0) r.fail("unknown array element type %u", static_cast<unsigned>(et));
  if (count > r.remaining() / min_bytes) r.fail("an array of %llu elements does not fit in the file", (unsigned long long)count);
  if (elem_out) *elem_out = et;
  nlohmann::json a = nlohmann::json::array();
  a.get_ref<nlohmann::json::array_t&>().reserve(static_cast<size_t>(count));
  for (uint64_t i = 0; i < count; ++i) a.push_back(read_value(r, et, depth + 1, nullptr));
  return a;
}

uint16_t h16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

void get_scale_min_k4(int j, const uint8_t* q, uint8_t* d, uint8_t* m) {
  if (j < 4) {
    *d = q[j] & 63;
    *m = q[j + 4] & 63;
  } else {
    *d = static_cast<uint8_t>((q[j + 4] & 0xF) | ((q[j - 4] >> 6) << 4));
    *m = static_cast<uint8_t>((q[j + 4] >> 4) | ((q[j] >> 6) << 4));
  }
}

void dequant_block(uint32_t type, const uint8_t* b, float* y) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::kQ4_0: {
      const float d = f16_to_f32(h16(b));
      for (int j = 0; j < 16; ++j) {
        y[j] = static_cast<float>((b[2 + j] & 0xF) - 8) * d;
        y[j + 16] = static_cast<float>((b[2 + j] >> 4) - 8) * d;
      }
      return;
    }
    case GgmlType::kQ4_1: {
      const float d = f16_to_f32(h16(b)), m = f16_to_f32(h16(b + 2));
      for (int j = 0; j < 16; ++j) {
        y[j] = static_cast<float>(b[4 + j] & 0xF) * d + m;
        y[j + 16] = static_cast<float>(b[4 + j] >> 4) * d + m;
      }
      return;
    }
    case GgmlType::kQ5_0: case GgmlType::kQ5_1: {
      const bool one = static_cast<GgmlType>(type) == GgmlType::kQ5_1;
      const float d = f16_to_f32(h16(b)), m = one ? f16_to_f32(h16(b + 2)) : 0.f;
      uint32_t qh;
      std::memcpy(&qh, b + (one ? 4 : 2), 4);
      const uint8_t* qs = b + (one ? 8 : 6);
      for (int j = 0; j < 16; ++j) {
        const int x0 = (qs[j] & 0xF) | static_cast<int>(((qh >> j) << 4) & 0x10);
        const int x1 = (qs[j] >> 4) | static_cast<int>((qh >> (j + 12)) & 0x10);
        y[j] = one ? static_cast<float>(x0) * d + m : static_cast<float>(x0 - 16) * d;
        y[j + 16] = one ? static_cast<float>(x1) * d + m : static_cast<float>(x1 - 16) * d;
      }
      return;
    }
    case GgmlType::kQ8_0: {
      const float d = f16_to_f32(h16(b));
      for (int j = 0; j < 32; ++j) y[j] = static_cast<float>(static_cast<int8_t>(b[2 + j])) * d;
      return;
    }
    case GgmlType::kQ4_K: case GgmlType::kQ5_K: {
      const bool five = static_cast<GgmlType>(type) == GgmlType::kQ5_K;
      const float d = f16_to_f32(h16(b)), dmin = f16_to_f32(h16(b + 2));
      const uint8_t* scales = b + 4;
      const uint8_t* qh = b + 16;
      const uint8_t* q = b + (five ? 48 : 16);
      int is = 0;
      uint8_t u1 = 1, u2 = 2;
      for (int j = 0; j < 256; j += 64) {
        uint8_t sc, mn;
        get_scale_min_k4(is, scales, &sc, &mn);
        const float d1 = d * sc, m1 = dmin * mn;
        get_scale_min_k4(is + 1, scales, &sc, &mn);
        const float d2 = d * sc, m2 = dmin * mn;
        for (int l = 0; l < 32; ++l) {
          const int h1 = five && (qh[l] & u1) ? 16 : 0, h2 = five && (qh[l] & u2) ? 16 : 0;
          y[j + l] = d1 * static_cast<float>((q[l] & 0xF) + h1) - m1;
          y[j + 32 + l] = d2 * static_cast<float>((q[l] >> 4) + h2) - m2;
        }
        q += 32;
        is += 2;
        u1 = static_cast<uint8_t>(u1 << 2);
        u2 = static_cast<uint8_t>(u2 << 2);
      }
      return;
    }
    case GgmlType::kQ6_K: {
      const uint8_t* ql = b;
      const uint8_t* qh = b + 128;
      const auto* sc = reinterpret_cast<const int8_t*>(b + 192);
      const float d = f16_to_f32(h16(b + 208));
      for (int n = 0; n < 256; n += 128) {
        for (int l = 0; l < 32; ++l) {
          const int is = l / 16;
          const int q1 = ((ql[l] & 0xF) | (((qh[l] >> 0) & 3) << 4)) - 32;
          const int q2 = ((ql[l + 32] & 0xF) | (((qh[l] >> 2) & 3) << 4)) - 32;
          const int q3 = ((ql[l] >> 4) | (((qh[l] >> 4) & 3) << 4)) - 32;
          const int q4 = ((ql[l + 32] >> 4) | (((qh[l] >> 6) & 3) << 4)) - 32;
          y[n + l] = d * sc[is] * static_cast<float>(q1);
          y[n + l + 32] = d * sc[is + 2] * static_cast<float>(q2);
          y[n + l + 64] = d * sc[is + 4] * static_cast<float>(q3);
          y[n + l + 96] = d * sc[is + 6] * static_cast<float>(q4);
        }
        ql += 64;
        qh += 32;
        sc += 8;
      }
      return;
    }
    default: RWKVL_FAIL(kUnsupported, "ggml type %u cannot be dequantised here", type);
  }
}

}  // namespace

const char* ggml_type_name(uint32_t type) {
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::kF32: return "F32";
    case GgmlType::kF16: return "F16";
    case GgmlType::kQ4_0: return "Q4_0";
    case GgmlType::kQ4_1: return "Q4_1";
    case GgmlType::kQ5_0: return "Q5_0";
    case GgmlType::kQ5_1: return "Q5_1";
    case GgmlType::kQ8_0: return "Q8_0";
    case GgmlType::kQ4_K: return "Q4_K";
    case GgmlType::kQ5_K: return "Q5_K";
    case GgmlType::kQ6_K: return "Q6_K";
    case GgmlType::kBF16: return "BF16";
  }
  return nullptr;
}

bool ggml_block(uint32_t type, uint32_t* be, uint32_t* bb) {
  struct B { uint32_t e, b; };
  B v{};
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::kF32: v = {1, 4}; break;
    case GgmlType::kF16: case GgmlType::kBF16: v = {1, 2}; break;
    case GgmlType::kQ4_0: v = {32, 18}; break;
    case GgmlType::kQ4_1: v = {32, 20}; break;
    case GgmlType::kQ5_0: v = {32, 22}; break;
    case GgmlType::kQ5_1: v = {32, 24}; break;
    case GgmlType::kQ8_0: v = {32, 34}; break;
    case GgmlType::kQ4_K: v = {256, 144}; break;
    case GgmlType::kQ5_K: v = {256, 176}; break;
    case GgmlType::kQ6_K: v = {256, 210}; break;
    default: return false;
  }
  *be = v.e;
  *bb = v.b;
  return true;
}

void ggml_to_f32(uint32_t type, const void* src, float* dst, size_t n) {
  const auto* s = static_cast<const uint8_t*>(src);
  switch (static_cast<GgmlType>(type)) {
    case GgmlType::kF32: std::memcpy(dst, s, n * 4); return;
    case GgmlType::kF16: f16_to_f32_row(reinterpret_cast<const uint16_t*>(s), dst, n); return;
    case GgmlType::kBF16: bf16_to_f32_row(reinterpret_cast<const uint16_t*>(s), dst, n); return;
    default: break;
  }
  uint32_t be = 0, bb = 0;
  if (!ggml_block(type, &be, &bb)) RWKVL_FAIL(kUnsupported, "ggml type %u is not supported", type);
  for (size_t i = 0; i < n / be; ++i) dequant_block(type, s + i * bb, dst + i * be);
}

const GgufKV* GgufFile::find(const std::string& key) const {
  for (const GgufKV& e : kv)
    if (e.key == key) return &e;
  return nullptr;
}

bool is_gguf(const MappedFile& f) { return f.size() >= 4 && std::memcmp(f.data(), kMagic, 4) == 0; }

GgufFile parse_gguf(const MappedFile& f) {
  Reader r(f);
  GgufFile g;
  r.need(4, "magic");
  if (!is_gguf(f)) r.fail("bad magic");
  r.get<uint32_t>("magic");
  g.version = r.get<uint32_t>("version");
  if (g.version != 2 && g.version != 3)
    RWKVL_FAIL(kUnsupported, "%s: GGUF version %u is not supported (2 and 3 are)", f.path().c_str(), g.version);
  const uint64_t n_tensors = r.get<uint64_t>("tensor count"), n_kv = r.get<uint64_t>("metadata count");
  // A key/value needs at least 8 + 1 + 4 + 1 bytes, a tensor record 8 + 1 + 4 + 8 + 4 + 8.
  if (n_kv > r.remaining() / 14) r.fail("%llu metadata entries do not fit in the file", (unsigned long long)n_kv);
  if (n_tensors > r.remaining() / 33) r.fail("%llu tensor records do not fit in the file", (unsigned long long)n_tensors);
  for (uint64_t i = 0; i < n_kv; ++i) {
    GgufKV e;
    e.key = r.str("metadata key", kMaxNameBytes);
    e.type = static_cast<GgufType>(r.get<uint32_t>("metadata value type"));
    e.value = read_value(r, e.type, 0, &e.elem);
    for (const GgufKV& prev : g.kv)
      if (prev.key == e.key) r.fail("metadata key '%s' appears twice", e.key.c_str());
    g.kv.push_back(std::move(e));
  }
  if (const GgufKV* a = g.find("general.alignment")) {
    if (a->type != GgufType::kU32 || a->value.get<uint64_t>() == 0 || (a->value.get<uint64_t>() & (a->value.get<uint64_t>() - 1)))
      r.fail("general.alignment must be a u32 power of two");
    g.alignment = a->value.get<uint64_t>();
  }
  for (uint64_t i = 0; i < n_tensors; ++i) {
    GgufTensorInfo t;
    t.name = r.str("tensor name", kMaxNameBytes);
    const uint32_t nd = r.get<uint32_t>("dimension count");
    if (nd < 1 || nd > kMaxDims) r.fail("tensor '%s' has %u dimensions (1 to %u)", t.name.c_str(), nd, kMaxDims);
    uint64_t numel = 1;
    for (uint32_t d = 0; d < nd; ++d) {
      const uint64_t v = r.get<uint64_t>("dimension");
      if (v == 0 || v > (1ull << 40) || numel > (1ull << 42) / v) r.fail("tensor '%s' has a dimension of %llu", t.name.c_str(), (unsigned long long)v);
      numel *= v;
      t.ne.push_back(v);
    }
    t.type = r.get<uint32_t>("tensor type");
    uint32_t be = 0, bb = 0;
    if (!ggml_block(t.type, &be, &bb))
      RWKVL_FAIL(kUnsupported, "%s: GGUF tensor '%s' has ggml type %u, which this build does not read (F32, F16, BF16, Q4_0, "
                 "Q4_1, Q5_0, Q5_1, Q8_0, Q4_K, Q5_K, Q6_K)", f.path().c_str(), t.name.c_str(), t.type);
    if (t.ne[0] % be) r.fail("tensor '%s': rows of %llu values are not whole %s blocks of %u", t.name.c_str(), (unsigned long long)t.ne[0], ggml_type_name(t.type), be);
    t.nbytes = numel / be * bb;
    t.offset = r.get<uint64_t>("tensor offset");
    if (t.offset % g.alignment) r.fail("tensor '%s' is not aligned to %llu bytes", t.name.c_str(), (unsigned long long)g.alignment);
    for (const GgufTensorInfo& prev : g.tensors)
      if (prev.name == t.name) r.fail("tensor '%s' appears twice", t.name.c_str());
    g.tensors.push_back(std::move(t));
  }
  g.data_offset = (r.offset() + g.alignment - 1) / g.alignment * g.alignment;
  for (const GgufTensorInfo& t : g.tensors)
    if (g.data_offset > f.size() || !f.contains(g.data_offset + t.offset, t.nbytes) || t.offset > f.size())
      r.fail("tensor '%s' (%llu bytes at data offset %llu) lies outside the file", t.name.c_str(),
             (unsigned long long)t.nbytes, (unsigned long long)t.offset);
  return g;
}

Tensor gguf_tensor(const GgufFile& g, const std::shared_ptr<MappedFile>& f, const GgufTensorInfo& t) {
  std::vector<int64_t> shape(t.ne.rbegin(), t.ne.rend());
  const uint8_t* src = f->data() + g.data_offset + t.offset;
  const auto type = static_cast<GgmlType>(t.type);
  Tensor out;
  if (type == GgmlType::kF32 || type == GgmlType::kF16 || type == GgmlType::kBF16) {
    out.name = t.name;
    out.dtype = type == GgmlType::kF32 ? DType::kF32 : type == GgmlType::kF16 ? DType::kF16 : DType::kBF16;
    out.shape = shape;
    out.data = src;
    out.nbytes = t.nbytes;
    out.owner = std::shared_ptr<const void>(f, f->data());
    return out;
  }
  if (type == GgmlType::kQ4_0 || type == GgmlType::kQ4_1) {
    // The same values as q4_g32 blocks {d, m, nibbles}: Q4_1 is that layout; Q4_0's (q - 8) d is d q + (-8 d).
    out = Tensor::alloc(t.name, DType::kQ4, shape);
    auto* dst = static_cast<BlockQ4*>(out.mutable_data());
    const size_t blocks = static_cast<size_t>(t.nbytes / (type == GgmlType::kQ4_0 ? 18 : 20));
    for (size_t i = 0; i < blocks; ++i) {
      if (type == GgmlType::kQ4_1) {
        std::memcpy(&dst[i], src + i * 20, 20);
      } else {
        const uint8_t* b = src + i * 18;
        dst[i].d = h16(b);
        dst[i].m = f32_to_f16(-8.0f * f16_to_f32(h16(b)));
        std::memcpy(dst[i].qs, b + 2, 16);
      }
    }
    return out;
  }
  // The other quantised types: dequantised row by row to f16.
  out = Tensor::alloc(t.name, DType::kF16, shape);
  auto* dst = static_cast<uint16_t*>(out.mutable_data());
  const uint64_t row = t.ne[0];
  const uint64_t rows = static_cast<uint64_t>(out.numel()) / row;
  uint32_t be = 0, bb = 0;
  ggml_block(t.type, &be, &bb);
  std::vector<float> tmp(static_cast<size_t>(row));
  for (uint64_t r = 0; r < rows; ++r) {
    ggml_to_f32(t.type, src + r * (row / be) * bb, tmp.data(), static_cast<size_t>(row));
    for (uint64_t j = 0; j < row; ++j) dst[r * row + j] = f32_to_f16(tmp[static_cast<size_t>(j)]);
  }
  return out;
}

RawCheckpoint read_gguf(std::shared_ptr<MappedFile> f) {
  const GgufFile g = parse_gguf(*f);
  RawCheckpoint raw;
  raw.kind = FileKind::kGguf;
  raw.file = f;
  raw.meta["gguf_version"] = g.version;
  nlohmann::json kv = nlohmann::json::object();
  for (const GgufKV& e : g.kv) {
    if (e.key == "tokenizer.ggml.tokens") {
      if (e.type != GgufType::kArray || e.elem != GgufType::kString)
        RWKVL_FAIL(kFormat, "%s: GGUF: tokenizer.ggml.tokens must be an array of strings", f->path().c_str());
      raw.meta["tokens"] = e.value;
    } else if (e.key == "tokenizer.ggml.token_type") {
      raw.meta["token_type"] = e.value;
    } else if (e.type == GgufType::kArray && e.value.size() > 64) {
      continue;  // token types, scores, merges: not needed
    } else {
      kv[e.key] = e.value;
    }
  }
  raw.meta["kv"] = std::move(kv);
  for (const GgufTensorInfo& t : g.tensors) raw.tensors.push_back(gguf_tensor(g, f, t));
  return raw;
}

// ------------------------------------------------------------------------------------------ writing

namespace {

class Out {
 public:
  explicit Out(FileWriter& w) : w_(w) {}
  template <class T>
  void put(T v) { w_.write(&v, sizeof v); }
  void str(const std::string& s) {
    put<uint64_t>(s.size());
    w_.write(s.data(), s.size());
  }
  void value(GgufType t, const nlohmann::json& v, GgufType elem) {
    switch (t) {
      case GgufType::kU8: put<uint8_t>(v.get<uint8_t>()); break;
      case GgufType::kI8: put<int8_t>(v.get<int8_t>()); break;
      case GgufType::kU16: put<uint16_t>(v.get<uint16_t>()); break;
      case GgufType::kI16: put<int16_t>(v.get<int16_t>()); break;
      case GgufType::kU32: put<uint32_t>(v.get<uint32_t>()); break;
      case GgufType::kI32: put<int32_t>(v.get<int32_t>()); break;
      case GgufType::kF32: put<float>(v.get<float>()); break;
      case GgufType::kBool: put<uint8_t>(v.get<bool>() ? 1 : 0); break;
      case GgufType::kU64: put<uint64_t>(v.get<uint64_t>()); break;
      case GgufType::kI64: put<int64_t>(v.get<int64_t>()); break;
      case GgufType::kF64: put<double>(v.get<double>()); break;
      case GgufType::kString: str(v.get_ref<const std::string&>()); break;
      case GgufType::kArray:
        put<uint32_t>(static_cast<uint32_t>(elem));
        put<uint64_t>(v.size());
        for (const auto& e : v) value(elem, e, GgufType::kU8);
        break;
    }
  }

 private:
  FileWriter& w_;
};

}  // namespace

void write_gguf(const std::string& path, const std::vector<GgufKV>& kv, const std::vector<GgufOutTensor>& tensors) {
  constexpr uint64_t kAlign = 32;
  FileWriter w(path);
  Out o(w);
  w.write(kMagic, 4);
  o.put<uint32_t>(3);
  o.put<uint64_t>(tensors.size());
  o.put<uint64_t>(kv.size() + 1);
  o.str("general.alignment");
  o.put<uint32_t>(static_cast<uint32_t>(GgufType::kU32));
  o.put<uint32_t>(kAlign);
  for (const GgufKV& e : kv) {
    if (e.key == "general.alignment") RWKVL_FAIL(kInvalidArgument, "write_gguf sets general.alignment itself");
    o.str(e.key);
    o.put<uint32_t>(static_cast<uint32_t>(e.type));
    o.value(e.type, e.value, e.elem);
  }
  uint64_t off = 0;
  for (const GgufOutTensor& t : tensors) {
    o.str(t.name);
    o.put<uint32_t>(static_cast<uint32_t>(t.ne.size()));
    for (uint64_t d : t.ne) o.put<uint64_t>(d);
    o.put<uint32_t>(t.type);
    o.put<uint64_t>(off);
    off += (t.bytes.size() + kAlign - 1) / kAlign * kAlign;
  }
  w.pad_to(kAlign);
  for (const GgufOutTensor& t : tensors) {
    w.write(t.bytes.data(), t.bytes.size());
    w.pad_to(kAlign);
  }
  w.commit();
}

std::vector<uint8_t> ggml_from_f32(uint32_t type, const float* src, int64_t rows, int64_t cols) {
  const auto gt = static_cast<GgmlType>(type);
  const size_t n = static_cast<size_t>(rows * cols);
  std::vector<uint8_t> out;
  auto put16 = [&](uint16_t v) { out.push_back(static_cast<uint8_t>(v)), out.push_back(static_cast<uint8_t>(v >> 8)); };
  if (gt == GgmlType::kF32) {
    out.resize(n * 4);
    std::memcpy(out.data(), src, n * 4);
    return out;
  }
  if (gt == GgmlType::kF16 || gt == GgmlType::kBF16) {
    for (size_t i = 0; i < n; ++i) put16(gt == GgmlType::kF16 ? f32_to_f16(src[i]) : f32_to_bf16(src[i]));
    return out;
  }
  if (cols % 32) RWKVL_FAIL(kInvalidArgument, "%s needs rows of whole 32-value blocks (%lld values)", ggml_type_name(type), (long long)cols);
  for (size_t b = 0; b < n / 32; ++b) {
    const float* x = src + b * 32;
    if (gt == GgmlType::kQ8_0) {
      float amax = 0;
      for (int j = 0; j < 32; ++j) amax = std::max(amax, std::fabs(x[j]));
      const float d = amax / 127.f, id = d ? 1.f / d : 0.f;
      put16(f32_to_f16(d));
      for (int j = 0; j < 32; ++j) out.push_back(static_cast<uint8_t>(static_cast<int8_t>(std::lround(x[j] * id))));
    } else if (gt == GgmlType::kQ4_0) {
      float amax = 0, mx = 0;
      for (int j = 0; j < 32; ++j)
        if (std::fabs(x[j]) > amax) amax = std::fabs(x[j]), mx = x[j];
      const float d = mx / -8.f, id = d ? 1.f / d : 0.f;
      put16(f32_to_f16(d));
      for (int j = 0; j < 16; ++j) {
        const int q0 = std::min(15, static_cast<int>(x[j] * id + 8.5f)), q1 = std::min(15, static_cast<int>(x[j + 16] * id + 8.5f));
        out.push_back(static_cast<uint8_t>(std::max(0, q0) | (std::max(0, q1) << 4)));
      }
    } else if (gt == GgmlType::kQ4_1) {
      float lo = x[0], hi = x[0];
      for (int j = 1; j < 32; ++j) lo = std::min(lo, x[j]), hi = std::max(hi, x[j]);
      const float d = (hi - lo) / 15.f, id = d ? 1.f / d : 0.f;
      put16(f32_to_f16(d));
      put16(f32_to_f16(lo));
      for (int j = 0; j < 16; ++j) {
        const int q0 = std::min(15, static_cast<int>((x[j] - lo) * id + 0.5f)), q1 = std::min(15, static_cast<int>((x[j + 16] - lo) * id + 0.5f));
        out.push_back(static_cast<uint8_t>(q0 | (q1 << 4)));
      }
    } else {
      RWKVL_FAIL(kInvalidArgument, "writing ggml type %s is not supported (F32, F16, BF16, Q8_0, Q4_0, Q4_1)", ggml_type_name(type) ? ggml_type_name(type) : "?");
    }
  }
  return out;
}

}  // namespace rwkvl
