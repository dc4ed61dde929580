// safetensors: u64 little-endian header length N, N bytes of JSON, then the tensor bytes.
// Header: {"name": {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, "__metadata__": {str: str}}
// with offsets relative to the start of the data area.
#include <algorithm>
#include <cstring>
#include <unordered_set>

#include "core/error.h"
#include "core/file_writer.h"
#include "format/format.h"

namespace rwkvl {

namespace {

constexpr uint64_t kMaxHeader = uint64_t{100} << 20;  // 100 MB, as the reference implementation
constexpr int kMaxJsonDepth = 64;

struct DTypeName {
  const char* name;
  DType dtype;
};
constexpr DTypeName kDTypes[] = {
    {"F32", DType::kF32}, {"F16", DType::kF16}, {"BF16", DType::kBF16},
    {"I8", DType::kI8},   {"I32", DType::kI32}, {"U8", DType::kU8},
};

const char* st_name(DType dt) {
  for (const DTypeName& d : kDTypes)
    if (d.dtype == dt) return d.name;
  return nullptr;
}

// Printable, bounded copy of untrusted text for error messages.
std::string shown(const std::string& s) {
  std::string out = s.size() > 80 ? s.substr(0, 80) + "..." : s;
  for (char& c : out)
    if (static_cast<unsigned char>(c) < 0x20 || c == 0x7f) c = '?';
  return out;
}

struct Info {
  std::string name;
  DType dtype;
  std::vector<int64_t> shape;
  uint64_t begin, end;
};

// Cheap structural screening before handing the text [hb, he) to the JSON parser, then the parse.
nlohmann::ordered_json parse_header(const char* pc, const char* hb, const char* he) {
  const char* first = hb;
  while (first < he && (*first == ' ' || *first == '\t' || *first == '\n' || *first == '\r')) ++first;
  if (first == he || *first != '{') RWKVL_FAIL(kFormat, "%s: safetensors header is not a JSON object", pc);
  int depth = 0;
  bool in_str = false, esc = false;
  for (const char* p = first; p < he; ++p) {
    if (in_str) {
      if (esc) {
        esc = false;
      } else if (*p == '\\') {
        esc = true;
      } else if (*p == '"') {
        in_str = false;
      }
    } else if (*p == '"') {
      in_str = true;
    } else if (*p == '{' || *p == '[') {
      if (++depth > kMaxJsonDepth)
        RWKVL_FAIL(kFormat, "%s: safetensors header nests deeper than %d levels", pc, kMaxJsonDepth);
    } else if (*p == '}' || *p == ']') {
      --depth;
    }
  }

  nlohmann::ordered_json header;
  try {
    header = nlohmann::ordered_json::parse(hb, he);
  } catch (const nlohmann::json::exception& e) {
    RWKVL_FAIL(kFormat, "%s: invalid safetensors JSON header: %s", pc, e.what());
  }
  if (!header.is_object()) RWKVL_FAIL(kFormat, "%s: safetensors header is not a JSON object", pc);
  return header;
}

// One tensor entry of the header, checked against the data area of data_len bytes.
Info parse_entry(const std::string& path, const std::string& key, const nlohmann::ordered_json& v, uint64_t data_len) {
  const char* pc = path.c_str();
  const std::string nm = shown(key);
  const char* kn = nm.c_str();
  if (key.empty()) RWKVL_FAIL(kFormat, "%s: safetensors tensor with an empty name", pc);
  if (!v.is_object()) RWKVL_FAIL(kFormat, "%s: safetensors entry '%s' is not an object", pc, kn);
  auto dt_it = v.find("dtype"), shape_it = v.find("shape"), off_it = v.find("data_offsets");
  if (dt_it == v.end() || !dt_it->is_string()) RWKVL_FAIL(kFormat, "%s: tensor '%s' has no dtype string", pc, kn);
  if (shape_it == v.end() || !shape_it->is_array()) RWKVL_FAIL(kFormat, "%s: tensor '%s' has no shape array", pc, kn);
  if (off_it == v.end() || !off_it->is_array() || off_it->size() != 2)
    RWKVL_FAIL(kFormat, "%s: tensor '%s' has no data_offsets [begin, end]", pc, kn);
  Info info;
  info.name = key;
  const std::string dts = dt_it->get<std::string>();
  bool known = false;
  for (const DTypeName& d : kDTypes) {
    if (dts == d.name) {
      info.dtype = d.dtype;
      known = true;
    }
  }
  if (!known)
    RWKVL_FAIL(kUnsupported, "%s: tensor '%s' has unsupported dtype '%s' (supported: F32, F16, BF16, I8, I32, U8)",
               pc, kn, shown(dts).c_str());
  for (const auto& d : *shape_it) {
    if (!d.is_number_unsigned() || d.get<uint64_t>() > static_cast<uint64_t>(INT64_MAX))
      RWKVL_FAIL(kFormat, "%s: tensor '%s' has a shape entry that is not a non-negative integer", pc, kn);
    info.shape.push_back(static_cast<int64_t>(d.get<uint64_t>()));
  }
  const int64_t numel = checked_numel(info.shape, path + ": tensor '" + nm + "'");
  for (const auto& o : *off_it)
    if (!o.is_number_unsigned()) RWKVL_FAIL(kFormat, "%s: tensor '%s' has non-integer data_offsets", pc, kn);
  info.begin = (*off_it)[0].get<uint64_t>();
  info.end = (*off_it)[1].get<uint64_t>();
  if (info.begin > info.end || info.end > data_len)
    RWKVL_FAIL(kFormat,
               "%s: tensor '%s' data_offsets [%llu, %llu] lie outside the data area (%llu bytes; truncated?)", pc, kn,
               static_cast<unsigned long long>(info.begin), static_cast<unsigned long long>(info.end),
               static_cast<unsigned long long>(data_len));
  const size_t want = dtype_bytes(info.dtype, static_cast<uint64_t>(numel));
  if (want != info.end - info.begin)
    RWKVL_FAIL(kFormat, "%s: tensor '%s' (%s, %lld elements) needs %llu bytes but its data_offsets span %llu", pc, kn,
               dts.c_str(), static_cast<long long>(numel), static_cast<unsigned long long>(want),
               static_cast<unsigned long long>(info.end - info.begin));
  return info;
}

// The "__metadata__" object: string values only, copied into meta["metadata"].
void parse_metadata(const char* pc, const nlohmann::ordered_json& v, nlohmann::json& meta) {
  if (!v.is_object()) RWKVL_FAIL(kFormat, "%s: safetensors __metadata__ is not an object", pc);
  for (const auto& [mk, mv] : v.items()) {
    if (!mv.is_string())
      RWKVL_FAIL(kFormat, "%s: safetensors metadata value of '%s' is not a string", pc, shown(mk).c_str());
    meta["metadata"][mk] = mv.get<std::string>();
  }
}

// Sorts infos into file order; non-empty tensors must not share bytes.
void sort_and_check_overlap(const char* pc, std::vector<Info>& infos) {
  std::stable_sort(infos.begin(), infos.end(), [](const Info& a, const Info& b) { return a.begin < b.begin; });
  const Info* prev = nullptr;
  for (const Info& info : infos) {
    if (info.begin == info.end) continue;
    if (prev && info.begin < prev->end)
      RWKVL_FAIL(kFormat, "%s: tensors '%s' and '%s' overlap in the data area", pc, shown(prev->name).c_str(),
                 shown(info.name).c_str());
    prev = &info;
  }
}

// A view of the tensor's bytes at src (kept alive by owner), or a copy when src is misaligned for its dtype.
Tensor make_tensor(Info& info, const uint8_t* src, const std::shared_ptr<const void>& owner) {
  Tensor t;
  t.name = std::move(info.name);
  t.dtype = info.dtype;
  t.shape = std::move(info.shape);
  t.nbytes = static_cast<size_t>(info.end - info.begin);
  const size_t esz = dtype_info(t.dtype).block_bytes;
  if (reinterpret_cast<uintptr_t>(src) % esz == 0) {
    t.data = src;
    t.owner = owner;
  } else {  // misaligned (a header not padded to 8 bytes): copy so typed access stays valid
    Tensor c = Tensor::alloc(t.name, t.dtype, t.shape);
    std::memcpy(c.mutable_data(), src, t.nbytes);
    t = std::move(c);
  }
  return t;
}

}  // namespace

RawCheckpoint read_safetensors(std::shared_ptr<MappedFile> f) {
  RWKVL_CHECK(f != nullptr);
  const char* pc = f->path().c_str();
  const uint8_t* base = f->data();
  const size_t size = f->size();
  if (size < 8)
    RWKVL_FAIL(kFormat, "%s: truncated safetensors file (%zu bytes, the header length alone needs 8)", pc, size);
  uint64_t n = 0;
  for (int k = 7; k >= 0; --k) n = (n << 8) | base[k];
  if (n > kMaxHeader)
    RWKVL_FAIL(kFormat, "%s: safetensors header length %llu is implausibly large (limit %llu bytes)", pc,
               static_cast<unsigned long long>(n), static_cast<unsigned long long>(kMaxHeader));
  if (n > size - 8)
    RWKVL_FAIL(kFormat, "%s: safetensors header length %llu exceeds the file (%zu bytes; truncated?)", pc,
               static_cast<unsigned long long>(n), size);
  const char* hb = reinterpret_cast<const char*>(base + 8);
  const nlohmann::ordered_json header = parse_header(pc, hb, hb + n);

  RawCheckpoint ck;
  ck.kind = FileKind::kSafetensors;
  ck.file = f;
  ck.meta["metadata"] = nlohmann::json::object();
  const uint64_t data_start = 8 + n, data_len = size - data_start;
  std::vector<Info> infos;
  for (const auto& [key, v] : header.items()) {
    if (key == "__metadata__")
      parse_metadata(pc, v, ck.meta);
    else
      infos.push_back(parse_entry(f->path(), key, v, data_len));
  }
  sort_and_check_overlap(pc, infos);

  std::shared_ptr<const void> owner(f, base);
  for (Info& info : infos) ck.tensors.push_back(make_tensor(info, base + data_start + info.begin, owner));
  return ck;
}

void write_safetensors(const std::string& path, const std::vector<Tensor>& tensors,
                       const std::vector<std::pair<std::string, std::string>>& metadata) {
  const char* pc = path.c_str();
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) {
    nlohmann::ordered_json m = nlohmann::ordered_json::object();
    for (const auto& [k, v] : metadata) {
      if (m.contains(k)) RWKVL_FAIL(kInvalidArgument, "%s: duplicate metadata key '%s'", pc, k.c_str());
      m[k] = v;
    }
    header["__metadata__"] = std::move(m);
  }
  std::unordered_set<std::string> names;
  uint64_t off = 0;
  for (const Tensor& t : tensors) {
    const char* nm = t.name.c_str();
    const char* dts = st_name(t.dtype);
    if (!dts)
      RWKVL_FAIL(kUnsupported, "%s: tensor '%s' has dtype %s; safetensors output supports f32, f16, bf16, i8, i32, u8",
                 pc, nm, dtype_name(t.dtype));
    if (t.name.empty() || t.name == "__metadata__")
      RWKVL_FAIL(kInvalidArgument, "%s: invalid tensor name '%s'", pc, nm);
    if (!names.insert(t.name).second) RWKVL_FAIL(kInvalidArgument, "%s: duplicate tensor name '%s'", pc, nm);
    const int64_t numel = checked_numel(t.shape, t.name);
    if (dtype_bytes(t.dtype, static_cast<uint64_t>(numel)) != t.nbytes)
      RWKVL_FAIL(kInvalidArgument, "%s: tensor '%s' has shape %s but %zu bytes", pc, nm, t.shape_str().c_str(),
                 t.nbytes);
    if (t.nbytes && !t.data) RWKVL_FAIL(kInvalidArgument, "%s: tensor '%s' has no data", pc, nm);
    header[t.name] = {{"dtype", dts}, {"shape", t.shape}, {"data_offsets", {off, off + t.nbytes}}};
    off += t.nbytes;
  }
  std::string text;
  try {
    text = header.dump();
  } catch (const nlohmann::json::exception& e) {
    RWKVL_FAIL(kInvalidArgument, "%s: tensor names and metadata must be valid UTF-8 (%s)", pc, e.what());
  }
  text.append((8 - text.size() % 8) % 8, ' ');  // data start 8-byte aligned
  if (text.size() > kMaxHeader) RWKVL_FAIL(kInvalidArgument, "%s: safetensors header would exceed 100 MB", pc);

  FileWriter out(path);
  uint8_t len[8];
  for (int k = 0; k < 8; ++k) len[k] = static_cast<uint8_t>(static_cast<uint64_t>(text.size()) >> (8 * k));
  out.write(len, 8);
  out.write(text.data(), text.size());
  for (const Tensor& t : tensors) out.write(t.data, t.nbytes);
  out.commit();
}

}  // namespace rwkvl
