// The C enums by name (include/rwkv_lite.h, "NAMES"): rwkvl_*_from_string and rwkvl_*_name. Every string
// goes through the library's own parser and name of the matching C++ enum, so the spellings live in one place
// per enum (the dtype table of src/core/dtype.cpp, the FFN and head modes of src/runtime, the recipe enums of
// src/compress/pipeline.cpp); the command line maps its flags through these calls.
#include <cstring>
#include <optional>
#include <string>
#include <string_view>

#include "api/api_internal.h"
#include "compress/pipeline.h"
#include "core/dtype.h"
#include "model/model.h"
#include "runtime/ffn_runtime.h"
#include "runtime/head_runtime.h"
#include "rwkv_lite.h"

using rwkvl::api::enum_value;
using rwkvl::api::guarded;
namespace cz = rwkvl::compress;

namespace {

// The C enums mirror the library's (same order and values): checked here, where both are visible.
static_assert(static_cast<int>(cz::LowRankMethod::kAsvd) == RWKVL_LOWRANK_ASVD);
static_assert(static_cast<int>(cz::Quant::kInt4) == RWKVL_QUANT_INT4);
static_assert(static_cast<int>(cz::HeadPrior::kUniform) == RWKVL_HEAD_PRIOR_UNIFORM);
static_assert(static_cast<int>(cz::ClusterSource::kEmbedding) == RWKVL_CLUSTER_SOURCE_EMB);
static_assert(static_cast<int>(cz::PruneMethod::kDsnot) == RWKVL_PRUNE_DSNOT && static_cast<int>(cz::PruneMethod::kWanda) == RWKVL_PRUNE_WANDA);
static_assert(static_cast<int>(cz::PruneStore::kPacked) == RWKVL_PRUNE_STORE_PACKED && static_cast<int>(cz::PruneStore::kDense) == RWKVL_PRUNE_STORE_DENSE);
static_assert(static_cast<int>(rwkvl::FfnMode::kPredict) == RWKVL_FFN_PREDICT &&
              static_cast<int>(rwkvl::FfnMode::kDense) == RWKVL_FFN_DENSE);
static_assert(static_cast<int>(rwkvl::HeadMode::kCluster) == RWKVL_HEAD_CLUSTER &&
              static_cast<int>(rwkvl::HeadMode::kFull) == RWKVL_HEAD_FULL);
static_assert(static_cast<int>(rwkvl::WeightDType::kKeep) == RWKVL_DTYPE_KEEP &&
              static_cast<int>(rwkvl::WeightDType::kF32) == RWKVL_DTYPE_F32 &&
              static_cast<int>(rwkvl::WeightDType::kF16) == RWKVL_DTYPE_F16 &&
              static_cast<int>(rwkvl::WeightDType::kBF16) == RWKVL_DTYPE_BF16 &&
              static_cast<int>(rwkvl::WeightDType::kI8) == RWKVL_DTYPE_I8 &&
              static_cast<int>(rwkvl::WeightDType::kQ4) == RWKVL_DTYPE_Q4,
              "rwkvl_dtype 0..5 are the values of WeightDType (src/model/model.h)");

constexpr const char* kUnknown = "unknown";

// Parses s with `parse` (nullopt: unknown) into *out; *out is written only on success.
template <class E>
rwkvl_status enum_from(const char* s, E* out, const char* what, const char* known,
                       std::optional<E> (*parse)(std::string_view)) {
  return guarded([&] {
    RWKVL_API_REQUIRE(s && out, "%s: NULL argument", what);
    const std::optional<E> v = parse(s);
    RWKVL_API_REQUIRE(v.has_value(), "unknown %s '%s' (use %s)", what, s, known);
    *out = *v;
  });
}

// The library's value of a C enum as the C enum, or nullopt.
template <class C, class L>
std::optional<C> as_c(std::optional<L> v) {
  if (!v) return std::nullopt;
  return static_cast<C>(*v);
}

std::optional<rwkvl_lowrank_method> lowrank_of(std::string_view s) {
  return as_c<rwkvl_lowrank_method>(cz::parse_lowrank_method(s));
}
std::optional<rwkvl_quant> quant_of(std::string_view s) { return as_c<rwkvl_quant>(cz::parse_quant(s)); }
std::optional<rwkvl_head_prior> prior_of(std::string_view s) { return as_c<rwkvl_head_prior>(cz::parse_head_prior(s)); }
std::optional<rwkvl_cluster_source> source_of(std::string_view s) {
  return as_c<rwkvl_cluster_source>(cz::parse_cluster_source(s));
}

// The runtime's parsers throw on unknown names; here unknown is nullopt (enum_from words the message).
std::optional<rwkvl_ffn_mode> ffn_mode_of(std::string_view s) {
  for (int v = RWKVL_FFN_AUTO; v <= RWKVL_FFN_PREDICT; ++v)
    if (s == rwkvl::ffn_mode_name(static_cast<rwkvl::FfnMode>(v))) return static_cast<rwkvl_ffn_mode>(v);
  return std::nullopt;
}
std::optional<rwkvl_head_mode> head_mode_of(std::string_view s) {
  for (int v = RWKVL_HEAD_AUTO; v <= RWKVL_HEAD_CLUSTER; ++v)
    if (s == rwkvl::head_mode_name(static_cast<rwkvl::HeadMode>(v))) return static_cast<rwkvl_head_mode>(v);
  return std::nullopt;
}

// Weight dtypes: the dtype table's option names and aliases (WeightDType), and q5_1 and f16_2of4, which files hold
// but no option converts to.
std::optional<rwkvl_dtype> dtype_of(std::string_view s) {
  if (s == rwkvl::dtype_name(rwkvl::DType::kQ5_1)) return RWKVL_DTYPE_Q5_1;
  if (s == rwkvl::dtype_name(rwkvl::DType::kF16S24)) return RWKVL_DTYPE_F16_2OF4;
  if (s == rwkvl::dtype_name(rwkvl::DType::kF16M)) return RWKVL_DTYPE_F16_MASKED;
  if (s == rwkvl::dtype_name(rwkvl::DType::kI8M)) return RWKVL_DTYPE_I8_MASKED;
  if (s == rwkvl::dtype_name(rwkvl::DType::kQ4M)) return RWKVL_DTYPE_Q4_MASKED;
  rwkvl::WeightDType w;
  if (!rwkvl::weight_dtype_from_string(std::string(s), &w)) return std::nullopt;
  return static_cast<rwkvl_dtype>(w);
}

// "none" for the recipe enums' kNone, whose library name is "".
const char* none_if_empty(const char* name) { return *name ? name : "none"; }

}  // namespace

namespace rwkvl::api {

rwkvl_dtype to_c_dtype(DType t) {
  switch (t) {
    case DType::kF32: return RWKVL_DTYPE_F32;
    case DType::kF16: return RWKVL_DTYPE_F16;
    case DType::kBF16: return RWKVL_DTYPE_BF16;
    case DType::kI8: return RWKVL_DTYPE_I8;
    case DType::kQ4: return RWKVL_DTYPE_Q4;
    case DType::kQ5_1: return RWKVL_DTYPE_Q5_1;
    case DType::kF16S24: return RWKVL_DTYPE_F16_2OF4;
    case DType::kF16M: return RWKVL_DTYPE_F16_MASKED;
    case DType::kI8M: return RWKVL_DTYPE_I8_MASKED;
    case DType::kQ4M: return RWKVL_DTYPE_Q4_MASKED;
    default: RWKVL_FAIL(kInternal, "a weight matrix of dtype %s", dtype_name(t));
  }
}

}  // namespace rwkvl::api

extern "C" {

rwkvl_status rwkvl_dtype_from_string(const char* s, rwkvl_dtype* out) {
  return enum_from(s, out, "dtype", "keep, f32, f16, bf16, i8 (int8), q4 (int4), q5_1, f16_2of4, f16_masked, i8_masked or q4_masked", &dtype_of);
}
rwkvl_status rwkvl_ffn_mode_from_string(const char* s, rwkvl_ffn_mode* out) {
  return enum_from(s, out, "FFN mode", "auto, dense, exact or predict", &ffn_mode_of);
}
rwkvl_status rwkvl_head_mode_from_string(const char* s, rwkvl_head_mode* out) {
  return enum_from(s, out, "head mode", "auto, full or cluster", &head_mode_of);
}
rwkvl_status rwkvl_lowrank_method_from_string(const char* s, rwkvl_lowrank_method* out) {
  return enum_from(s, out, "low-rank method", "svd, asvd or none", &lowrank_of);
}
rwkvl_status rwkvl_quant_from_string(const char* s, rwkvl_quant* out) {
  return enum_from(s, out, "quantisation", "int8, int4 or none", &quant_of);
}
rwkvl_status rwkvl_head_prior_from_string(const char* s, rwkvl_head_prior* out) {
  return enum_from(s, out, "head prior", "calib or uniform", &prior_of);
}
rwkvl_status rwkvl_cluster_source_from_string(const char* s, rwkvl_cluster_source* out) {
  return enum_from(s, out, "cluster source", "head or emb", &source_of);
}

// The values are read as integers (enum_value): a caller may pass any int, and loading one outside the enum's
// range as the enum type is undefined in C++.
const char* rwkvl_dtype_name(rwkvl_dtype d) {
  const long long v = enum_value(d);
  if (v == RWKVL_DTYPE_Q5_1) return rwkvl::dtype_name(rwkvl::DType::kQ5_1);
  if (v == RWKVL_DTYPE_F16_2OF4) return rwkvl::dtype_name(rwkvl::DType::kF16S24);
  if (v == RWKVL_DTYPE_F16_MASKED) return rwkvl::dtype_name(rwkvl::DType::kF16M);
  if (v == RWKVL_DTYPE_I8_MASKED) return rwkvl::dtype_name(rwkvl::DType::kI8M);
  if (v == RWKVL_DTYPE_Q4_MASKED) return rwkvl::dtype_name(rwkvl::DType::kQ4M);
  if (v < RWKVL_DTYPE_KEEP || v > RWKVL_DTYPE_Q4) return kUnknown;
  return rwkvl::weight_dtype_option_name(static_cast<rwkvl::WeightDType>(v));
}
const char* rwkvl_ffn_mode_name(rwkvl_ffn_mode m) {
  const long long v = enum_value(m);
  return v >= RWKVL_FFN_AUTO && v <= RWKVL_FFN_PREDICT ? rwkvl::ffn_mode_name(static_cast<rwkvl::FfnMode>(v)) : kUnknown;
}
const char* rwkvl_head_mode_name(rwkvl_head_mode m) {
  const long long v = enum_value(m);
  return v >= RWKVL_HEAD_AUTO && v <= RWKVL_HEAD_CLUSTER ? rwkvl::head_mode_name(static_cast<rwkvl::HeadMode>(v))
                                                         : kUnknown;
}
const char* rwkvl_lowrank_method_name(rwkvl_lowrank_method m) {
  const long long v = enum_value(m);
  if (v < RWKVL_LOWRANK_NONE || v > RWKVL_LOWRANK_ASVD) return kUnknown;
  return none_if_empty(cz::lowrank_method_name(static_cast<cz::LowRankMethod>(v)));
}
const char* rwkvl_quant_name(rwkvl_quant q) {
  const long long v = enum_value(q);
  if (v < RWKVL_QUANT_NONE || v > RWKVL_QUANT_INT4) return kUnknown;
  return none_if_empty(cz::quant_name(static_cast<cz::Quant>(v)));
}
const char* rwkvl_head_prior_name(rwkvl_head_prior p) {
  const long long v = enum_value(p);
  if (v < RWKVL_HEAD_PRIOR_CALIB || v > RWKVL_HEAD_PRIOR_UNIFORM) return kUnknown;
  return cz::head_prior_name(static_cast<cz::HeadPrior>(v));
}
const char* rwkvl_cluster_source_name(rwkvl_cluster_source s) {
  const long long v = enum_value(s);
  if (v < RWKVL_CLUSTER_SOURCE_HEAD || v > RWKVL_CLUSTER_SOURCE_EMB) return kUnknown;
  return cz::cluster_source_name(static_cast<cz::ClusterSource>(v));
}

}  // extern "C"
