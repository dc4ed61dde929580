#include "model/verify.h"

#include <cstring>

#include "core/error.h"
#include "core/hash.h"
#include "format/format.h"
#include "model/model.h"

namespace rwkvl {

namespace {

uint16_t load_u16(const uint8_t* p) {
  uint16_t v;
  std::memcpy(&v, p, 2);
  return v;
}

// Non-finite values of a tensor: {values examined, non-finite}. nan_only: +-inf are meaningful (thresholds).
std::pair<uint64_t, uint64_t> count_nonfinite(const Tensor& t, bool nan_only) {
  const auto* p = static_cast<const uint8_t*>(t.data);
  uint64_t values = 0, bad = 0;
  auto f16_bad = [&](uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (!nan_only || (h & 0x03ffu) != 0); };
  switch (t.dtype) {
    case DType::kF32: {
      values = t.nbytes / 4;
      for (uint64_t i = 0; i < values; ++i) {
        uint32_t u;
        std::memcpy(&u, p + 4 * i, 4);
        bad += (u & 0x7f800000u) == 0x7f800000u && (!nan_only || (u & 0x007fffffu) != 0);
      }
      break;
    }
    case DType::kF16:
      values = t.nbytes / 2;
      for (uint64_t i = 0; i < values; ++i) bad += f16_bad(load_u16(p + 2 * i));
      break;
    case DType::kBF16:
      values = t.nbytes / 2;
      for (uint64_t i = 0; i < values; ++i) {
        const uint16_t h = load_u16(p + 2 * i);
        bad += (h & 0x7f80u) == 0x7f80u && (!nan_only || (h & 0x007fu) != 0);
      }
      break;
    case DType::kQ4:    // {f16 d, f16 m, 16 bytes}: the two f16 per block are the only floats
    case DType::kQ5_1: {  // {f16 d, f16 m, u32 qh, 16 bytes}
      const size_t bb = dtype_info(t.dtype).block_bytes;
      for (uint64_t b = 0; b + bb <= t.nbytes; b += bb) {
        values += 2;
        bad += f16_bad(load_u16(p + b)) + f16_bad(load_u16(p + b + 2));
      }
      break;
    }
    default: break;  // i8 values, i32, u8: integers (int8 scales are separate float tensors)
  }
  return {values, bad};
}

}  // namespace

nlohmann::json verify_model(const std::string& path) {
  nlohmann::json rep;
  rep["file"] = path;
  rep["format"] = "unknown";
  rep["load_error"] = "";
  rep["model_error"] = "";
  rep["model"] = nullptr;
  rep["tensors"] = nlohmann::json::array();
  nlohmann::json problems = nlohmann::json::array();
  nlohmann::json summary = {{"tensors", 0},          {"bytes", 0},           {"checksum_ok", 0},
                            {"checksum_mismatch", 0}, {"checksum_none", 0},   {"nonfinite_tensors", 0},
                            {"nonfinite_values", 0},  {"checksums_in_format", false}};
  RawCheckpoint raw;
  try {
    raw = read_checkpoint(path);
  } catch (const Error& e) {
    rep["load_error"] = e.what();
    problems.push_back(std::string("cannot read the file: ") + e.what());
  }
  if (raw.file) {
    rep["format"] = file_kind_name(raw.kind);
    const bool native = raw.kind == FileKind::kNative;
    summary["checksums_in_format"] = native;
    const nlohmann::json no_sums = nlohmann::json::object();
    const nlohmann::json& sums = native && raw.meta.contains("checksums") ? raw.meta["checksums"] : no_sums;
    const uint8_t* fb = raw.file->data();
    const size_t fsize = raw.file->size();
    uint64_t total_bytes = 0, n_ok = 0, n_bad = 0, n_none = 0, nf_tensors = 0, nf_values = 0;
    for (const Tensor& t : raw.tensors) {
      const auto* p = static_cast<const uint8_t*>(t.data);
      const bool mapped = fb && p >= fb && p + t.nbytes <= fb + fsize;
      nlohmann::json e = {{"name", t.name},
                          {"dtype", dtype_name(t.dtype)},
                          {"shape", t.shape},
                          {"nbytes", t.nbytes},
                          {"offset", mapped ? static_cast<int64_t>(p - fb) : int64_t{-1}}};
      auto it = sums.find(t.name);
      if (it != sums.end() && it->is_string()) {
        const std::string want = it->get<std::string>(), got = hex64(fnv1a64(t.data, t.nbytes));
        e["expected"] = want;
        e["actual"] = got;
        if (want == got) {
          e["checksum"] = "ok";
          ++n_ok;
        } else {
          e["checksum"] = "mismatch";
          ++n_bad;
          problems.push_back("tensor '" + t.name + "': checksum mismatch (stored " + want + ", computed " + got +
                             "): its bytes changed after it was written");
        }
      } else {
        e["checksum"] = "none";
        ++n_none;
      }
      const auto [values, bad] = count_nonfinite(t, t.name.ends_with(".ffn.pred.thresh"));
      e["values"] = values;
      e["nonfinite"] = bad;
      if (bad) {
        ++nf_tensors;
        nf_values += bad;
        problems.push_back("tensor '" + t.name + "': " + std::to_string(bad) + " non-finite value" +
                           (bad == 1 ? "" : "s") + " (NaN or infinity)");
      }
      total_bytes += t.nbytes;
      if (mapped) raw.file->release_range(t.data, t.nbytes);  // verify a big file without keeping it resident
      rep["tensors"].push_back(std::move(e));
    }
    summary["tensors"] = raw.tensors.size();
    summary["bytes"] = total_bytes;
    summary["checksum_ok"] = n_ok;
    summary["checksum_mismatch"] = n_bad;
    summary["checksum_none"] = n_none;
    summary["nonfinite_tensors"] = nf_tensors;
    summary["nonfinite_values"] = nf_values;
    // Header fields in range, shapes, permutations, epsilons: everything the binder checks.
    try {
      std::shared_ptr<Model> m = Model::from_raw(raw, Model::LoadOptions{});
      rep["model"] = config_to_json(m->config());
    } catch (const Error& e) {
      rep["model_error"] = e.what();
      problems.push_back(std::string("the model does not load: ") + e.what());
    }
  }
  rep["summary"] = summary;
  rep["ok"] = problems.empty();
  rep["problems"] = problems;
  return rep;
}

}  // namespace rwkvl
