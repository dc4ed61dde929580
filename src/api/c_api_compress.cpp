// The compression section of the C API: rwkvl_compress (src/compress/pipeline.h) and the FFN activation
// statistics (src/compress/activation_stats.h).
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <functional>
#include <iterator>
#include <memory>
#include <optional>
#include <string_view>
#include <thread>
#include <string>
#include <vector>

#include "api/api_internal.h"
#include "compress/activation_stats.h"
#include "compress/pipeline.h"
#include "compress/plan.h"
#include "core/file_writer.h"
#include "rwkv_lite.h"

struct rwkvl_compress_details {
  std::string json;
};

struct rwkvl_ffn_sparsity_details {
  rwkvl::compress::FfnSparsityReport report;
  std::string json;
};

using rwkvl::api::guarded;
namespace cz = rwkvl::compress;

namespace {

// (The recipe enums' names and the static_asserts that they mirror the library's are in c_api_types.cpp.)
static_assert(std::size(rwkvl::kProjectionRoles) == 8, "one RWKVL_TARGET_* bit per projection role");

std::string dtype_or_keep(const char* s) { return !s || std::strcmp(s, "keep") == 0 ? std::string() : std::string(s); }

template <class E, class C>
E checked_enum(const C& c, int max, const char* what) {
  const long long v = rwkvl::api::enum_value(c);
  RWKVL_API_REQUIRE(v >= 0 && v <= max, "unknown %s value %lld", what, v);
  return static_cast<E>(v);
}

// RWKVL_TARGET_* bits -> the projection roles, in kProjectionRoles order; unknown bits are refused (`where` ends
// the message: "in the recipe", "to prune").
std::vector<rwkvl::MatRole> roles_of(uint32_t bits, const char* where) {
  RWKVL_API_REQUIRE((bits >> std::size(rwkvl::kProjectionRoles)) == 0, "unknown target bits 0x%x %s",
                    static_cast<unsigned>(bits), where);
  std::vector<rwkvl::MatRole> roles;
  for (size_t i = 0; i < std::size(rwkvl::kProjectionRoles); ++i)
    if (bits & (1u << i)) roles.push_back(rwkvl::kProjectionRoles[i]);
  return roles;
}

void apply_prune(const rwkvl_prune_recipe& p, cz::Recipe& r) {
  r.prune.method = checked_enum<cz::PruneMethod>(p.method, RWKVL_PRUNE_DSNOT, "pruning method");
  r.prune.store = checked_enum<cz::PruneStore>(p.store, RWKVL_PRUNE_STORE_PACKED, "pruning storage");
  r.prune.sparsity = p.sparsity;
  RWKVL_API_REQUIRE((p.pattern_n == 0) == (p.pattern_m == 0), "pattern %d:%d: give both N and M, or neither",
                    p.pattern_n, p.pattern_m);
  r.prune.pattern = cz::NMPattern{p.pattern_n, p.pattern_m};
  if (p.targets != 0 && p.targets != RWKVL_TARGETS_ALL) r.prune.targets = roles_of(p.targets, "to prune");
  r.prune.dsnot.max_cycles = p.dsnot_cycles;
  r.prune.dsnot.threshold = p.dsnot_threshold;
  r.prune.dsnot.var_power = p.dsnot_var_power;
  r.prune.dsnot.same_sign = p.dsnot_same_sign != 0;
}

cz::Recipe to_recipe(const rwkvl_compress_recipe& c) {
  cz::Recipe r;
  r.lowrank.method = checked_enum<cz::LowRankMethod>(c.lowrank, RWKVL_LOWRANK_ASVD, "low-rank method");
  r.lowrank.rank_frac = c.rank_frac;
  r.lowrank.rank = c.rank;
  r.lowrank.budget = c.budget_bytes;
  if (c.targets == RWKVL_TARGETS_ALL) {
    r.lowrank.all_targets = true;
  } else {
    r.lowrank.targets = roles_of(c.targets, "in the recipe");
  }
  r.lowrank.diag = c.diag != 0;
  r.lowrank.force = c.force != 0;
  r.lowrank.damp = c.damp;
  r.quant.type = checked_enum<cz::Quant>(c.quant, RWKVL_QUANT_INT4, "quantisation");
  r.quant.emb = c.quant_emb != 0;
  r.quant.head = c.quant_head != 0;
  r.dtype = dtype_or_keep(c.dtype);
  cz::Recipe::SparseFfn& s = r.sparse_ffn;
  s.enabled = c.sparse_ffn != 0;
  s.predictors = c.ffn_predictors != 0;
  s.dtype = dtype_or_keep(c.ffn_dtype);
  s.recall = c.recall;
  s.hidden = c.pred_hidden;
  s.epochs = c.pred_epochs;
  s.lr = c.pred_lr;
  s.holdout = c.pred_holdout;
  s.pred_int8 = c.pred_int8 != 0;
  s.seed = c.seed;
  cz::Recipe::ClusterHead& h = r.cluster_head;
  h.enabled = c.cluster_head != 0;
  h.k = c.cluster_head;
  h.cap = c.cluster_cap;
  h.pca_dims = c.pca_dims;
  h.epochs = c.head_epochs;
  h.lr = c.head_lr;
  h.prior = checked_enum<cz::HeadPrior>(c.head_prior, RWKVL_HEAD_PRIOR_UNIFORM, "head prior");
  h.prior_smoothing = c.prior_smoothing;
  h.source = checked_enum<cz::ClusterSource>(c.cluster_source, RWKVL_CLUSTER_SOURCE_EMB, "cluster source");
  h.seed = c.seed;
  r.n_threads = c.n_threads;
  return r;
}

cz::CalibrationData to_calibration(const rwkvl_model* model, const std::shared_ptr<rwkvl::Model>& m,
                                   const rwkvl_calibration* c) {
  if (!c) return {};
  const std::string name = c->name ? c->name : "";
  const bool has_tokens = c->tokens && c->n_tokens > 0, has_text = c->text != nullptr;
  RWKVL_API_REQUIRE(!(has_tokens && has_text), "rwkvl_compress: give calibration tokens or text, not both");
  RWKVL_API_REQUIRE(c->tokens || c->n_tokens == 0, "rwkvl_compress: NULL calibration tokens with n_tokens %zu",
                    c->n_tokens);
  if (has_text) {
    const rwkvl_tokenizer* tok = c->tokenizer;
    rwkvl_tokenizer* own = nullptr;
    if (!tok) {
      const std::string& path = m->path();
      if (rwkvl_tokenizer_for_model(model, path.empty() ? nullptr : path.c_str(), nullptr, &own) != RWKVL_OK)
        RWKVL_FAIL(kInvalidArgument, "calibration text: %s", rwkvl_last_error());
      tok = own;
    }
    std::unique_ptr<rwkvl_tokenizer, void (*)(rwkvl_tokenizer*)> keep(own, rwkvl_tokenizer_free);
    return cz::calibration_from_text(*tok->tok, std::string_view(c->text, c->text_len), c->max_tokens, name);
  }
  std::vector<int32_t> ids(c->tokens, c->tokens + c->n_tokens);
  if (c->max_tokens > 0 && ids.size() > c->max_tokens) ids.resize(c->max_tokens);
  return cz::calibration_from_tokens(std::move(ids), name);
}

void fill_report(const cz::PipelineReport& p, rwkvl_compress_report* out) {
  rwkvl_compress_report r{};
  r.weight_bytes_before = p.weight_bytes_before;
  r.weight_bytes_after = p.weight_bytes_after;
  r.out_file_bytes = p.out_file_bytes;
  r.calib_tokens = p.calib_tokens;
  for (const cz::MatrixReport& m : p.lowrank_quant.matrices) {
    r.matrices_factored += m.action == "factored";
    r.matrices_skipped += m.action == "skipped";
    r.matrices_dense += m.action == "dense";
    r.matrices_quantised += m.action == "quantised";
    r.matrices_converted += m.action == "converted";
  }
  r.budget_planned_bytes = p.lowrank_quant.budget_planned_bytes;
  r.budget_error_sum = p.lowrank_quant.budget_error_sum;
  r.ffn_bundle_bytes = p.sparse_ffn.bundle_bytes;
  r.ffn_predictor_bytes = p.sparse_ffn.predictor_bytes;
  r.cluster_k = static_cast<int>(p.cluster_head.k_final);
  r.seconds_lowrank_quant = p.seconds_lowrank_quant;
  r.seconds_sparse_collect = p.sparse_ffn.seconds_collect;
  r.seconds_sparse_train = p.sparse_ffn.seconds_train;
  r.seconds_cluster = p.cluster_head.seconds_cluster;
  r.seconds_cluster_calibration = p.cluster_head.seconds_calib;
  r.seconds_cluster_distillation = p.cluster_head.seconds_train;
  r.seconds_save = p.seconds_save;
  r.seconds_total = p.seconds_total;
  r.details = new rwkvl_compress_details{p.to_json().dump()};
  *out = r;
}

void copy_text(const std::string& text, char* out, size_t cap, size_t* n_out, const char* what) {
  *n_out = text.size();
  RWKVL_API_REQUIRE(text.size() < cap, "%s: %zu bytes needed, buffer has %zu", what, text.size() + 1, cap);
  std::memcpy(out, text.c_str(), text.size() + 1);
}

}  // namespace

extern "C" {

rwkvl_status rwkvl_targets_from_string(const char* list, uint32_t* out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(list && out, "rwkvl_targets_from_string: NULL argument");
    if (std::strcmp(list, "all") == 0) {
      *out = RWKVL_TARGETS_ALL;
      return;
    }
    uint32_t bits = 0;
    for (rwkvl::MatRole r : cz::parse_targets(list))
      for (size_t i = 0; i < std::size(rwkvl::kProjectionRoles); ++i)
        if (rwkvl::kProjectionRoles[i] == r) bits |= 1u << i;
    *out = bits;
  });
}

rwkvl_compress_recipe rwkvl_compress_default_recipe(void) {
  const cz::Recipe d;
  rwkvl_compress_recipe r{};
  r.lowrank = RWKVL_LOWRANK_NONE;
  r.targets = RWKVL_TARGETS_DEFAULT;
  r.damp = d.lowrank.damp;
  r.quant = RWKVL_QUANT_NONE;
  r.ffn_predictors = d.sparse_ffn.predictors;
  r.recall = d.sparse_ffn.recall;
  r.pred_hidden = d.sparse_ffn.hidden;
  r.pred_epochs = d.sparse_ffn.epochs;
  r.pred_lr = d.sparse_ffn.lr;
  r.pred_holdout = d.sparse_ffn.holdout;
  r.pred_int8 = d.sparse_ffn.pred_int8;
  r.cluster_cap = d.cluster_head.cap;
  r.pca_dims = d.cluster_head.pca_dims;
  r.head_epochs = d.cluster_head.epochs;
  r.head_lr = d.cluster_head.lr;
  r.head_prior = RWKVL_HEAD_PRIOR_CALIB;
  r.prior_smoothing = d.cluster_head.prior_smoothing;
  r.cluster_source = RWKVL_CLUSTER_SOURCE_HEAD;
  r.seed = d.sparse_ffn.seed;
  r.n_threads = 0;
  return r;
}

rwkvl_compress_options rwkvl_compress_default_options(void) { return rwkvl_compress_options{}; }

rwkvl_status rwkvl_compress_plan_get(const rwkvl_model* model, const rwkvl_compress_recipe* recipe,
                                     uint64_t calib_tokens, const rwkvl_compress_options* options,
                                     rwkvl_compress_plan* out) {
  if (out) *out = rwkvl_compress_plan{};
  return guarded([&] {
    RWKVL_API_REQUIRE(model && out, "rwkvl_compress_plan_get: NULL argument");
    const std::shared_ptr<rwkvl::Model> m = rwkvl::api::model_of(model);
    const cz::Recipe r = to_recipe(recipe ? *recipe : rwkvl_compress_default_recipe());
    const cz::CompressPlan p = cz::plan_compress(*m, r, static_cast<size_t>(calib_tokens), options ? options->mem_budget : 0);
    out->peak_bytes = p.peak_bytes;
    out->base_bytes = p.base_bytes;
    const cz::StagePlan* st[RWKVL_COMPRESS_STAGES] = {&p.lowrank_quant, &p.sparse_ffn, &p.cluster_head, &p.save};
    for (int i = 0; i < RWKVL_COMPRESS_STAGES; ++i) {
      out->stage_peak_bytes[i] = st[i]->runs ? st[i]->peak_bytes : 0;
      out->stage_work[i] = st[i]->runs ? st[i]->work : 0;
    }
    out->sparse_parallel_layers = p.sparse_parallel_layers;
  });
}

rwkvl_status rwkvl_compress(const rwkvl_model* model, const rwkvl_compress_recipe* recipe,
                            const rwkvl_calibration* calib, const char* out_path, rwkvl_compress_progress_fn progress,
                            void* user, rwkvl_compress_report* report) {
  return rwkvl_compress_ex(model, recipe, calib, out_path, nullptr, progress, user, report);
}

rwkvl_status rwkvl_compress_ex(const rwkvl_model* model, const rwkvl_compress_recipe* recipe,
                               const rwkvl_calibration* calib, const char* out_path,
                               const rwkvl_compress_options* options, rwkvl_compress_progress_fn progress, void* user,
                               rwkvl_compress_report* report) {
  return rwkvl_compress_with_prune(model, recipe, nullptr, calib, out_path, options, progress, user, report);
}

rwkvl_prune_recipe rwkvl_prune_default_recipe(void) {
  const cz::DsnotOptions d;
  rwkvl_prune_recipe p{};
  p.method = RWKVL_PRUNE_NONE;
  p.dsnot_cycles = d.max_cycles;
  p.dsnot_threshold = d.threshold;
  p.dsnot_var_power = d.var_power;
  p.dsnot_same_sign = d.same_sign ? 1 : 0;
  p.store = RWKVL_PRUNE_STORE_AUTO;
  return p;
}

rwkvl_status rwkvl_prune_method_from_string(const char* s, rwkvl_prune_method* out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(s && out, "rwkvl_prune_method_from_string: NULL argument");
    const auto v = cz::parse_prune_method(s);
    RWKVL_API_REQUIRE(v.has_value(), "unknown pruning method '%s' (use magnitude, wanda or dsnot)", s);
    *out = static_cast<rwkvl_prune_method>(*v);
  });
}

rwkvl_status rwkvl_prune_store_from_string(const char* s, rwkvl_prune_store* out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(s && out, "rwkvl_prune_store_from_string: NULL argument");
    const auto v = cz::parse_prune_store(s);
    RWKVL_API_REQUIRE(v.has_value(), "unknown pruning storage '%s' (use auto, dense or packed)", s);
    *out = static_cast<rwkvl_prune_store>(*v);
  });
}

rwkvl_status rwkvl_prune_pattern_from_string(const char* s, int* n, int* m) {
  return guarded([&] {
    RWKVL_API_REQUIRE(s && n && m, "rwkvl_prune_pattern_from_string: NULL argument");
    const cz::NMPattern p = cz::parse_nm_pattern(s);
    *n = p.n;
    *m = p.m;
  });
}

rwkvl_status rwkvl_compress_with_prune(const rwkvl_model* model, const rwkvl_compress_recipe* recipe,
                                       const rwkvl_prune_recipe* prune, const rwkvl_calibration* calib,
                                       const char* out_path, const rwkvl_compress_options* options,
                                       rwkvl_compress_progress_fn progress, void* user, rwkvl_compress_report* report) {
  rwkvl_compress_extras x = rwkvl_compress_default_extras();
  x.prune = prune;
  return rwkvl_compress_with(model, recipe, &x, calib, out_path, options, progress, user, report);
}

rwkvl_compress_extras rwkvl_compress_default_extras(void) {
  rwkvl_compress_extras x{};
  x.struct_size = sizeof(rwkvl_compress_extras);
  x.de_hot = 1024;
  return x;
}

namespace {

// "HIGH,int4" -> the recipe's fidelities.
void apply_fidelities(const char* list, cz::Recipe& r) {
  if (!list || !*list) return;
  const std::string s = list;
  const size_t comma = s.find(',');
  RWKVL_API_REQUIRE(comma != std::string::npos && s.find(',', comma + 1) == std::string::npos,
                    "--fidelities takes two names, the head's own dtype and int4 (e.g. int8,int4), not '%s'", list);
  const std::string hi = s.substr(0, comma), lo = s.substr(comma + 1);
  RWKVL_API_REQUIRE(lo == "int4", "the lower fidelity must be int4, not '%s' (--fidelities %s)", lo.c_str(), list);
  static const std::pair<const char*, rwkvl::DType> kHigh[] = {
      {"int8", rwkvl::DType::kI8}, {"f16", rwkvl::DType::kF16}, {"bf16", rwkvl::DType::kBF16}, {"f32", rwkvl::DType::kF32}};
  bool found = false;
  for (const auto& [name, d] : kHigh)
    if (hi == name) {
      r.cluster_head.high_fidelity = d;
      found = true;
    }
  RWKVL_API_REQUIRE(found, "unknown fidelity '%s' (the head's own dtype: int8, f16, bf16 or f32) in --fidelities %s", hi.c_str(), list);
  r.cluster_head.low_fidelity = cz::Quant::kInt4;
}

}  // namespace

rwkvl_status rwkvl_compress_with(const rwkvl_model* model, const rwkvl_compress_recipe* recipe,
                                 const rwkvl_compress_extras* extras, const rwkvl_calibration* calib,
                                 const char* out_path, const rwkvl_compress_options* options,
                                 rwkvl_compress_progress_fn progress, void* user, rwkvl_compress_report* report) {
  if (report) *report = rwkvl_compress_report{};
  return guarded([&] {
    RWKVL_API_REQUIRE(model && out_path, "rwkvl_compress: NULL argument");
    rwkvl_compress_extras x = rwkvl_compress_default_extras();
    rwkvl::api::read_extras(extras, x, "rwkvl_compress_with", "rwkvl_compress_default_extras");
    rwkvl::check_output_path(out_path);  // before any work
    const std::shared_ptr<rwkvl::Model> m = rwkvl::api::model_of(model);
    cz::Recipe r = to_recipe(recipe ? *recipe : rwkvl_compress_default_recipe());
    if (x.prune) apply_prune(*x.prune, r);
    apply_fidelities(x.fidelities, r);
    r.deep_embed.enabled = x.deep_embed != 0;
    r.deep_embed.hot = x.de_hot;
    if (options) r.mem_budget = options->mem_budget;
    const cz::CalibrationData cd = to_calibration(model, m, calib);
    cz::ProgressFn fn;
    if (progress) fn = [progress, user](const char* stage, int64_t done, int64_t total) { progress(stage, done, total, user); };
    cz::PipelineReport rep;
    cz::compress_to_file(m, r, cd, out_path, fn, &rep, options && options->resume);
    if (report) fill_report(rep, report);
  });
}

rwkvl_status rwkvl_compress_report_json(const rwkvl_compress_report* report, char* out, size_t cap, size_t* n_out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(report && n_out && (out || cap == 0), "rwkvl_compress_report_json: NULL argument");
    RWKVL_API_REQUIRE(report->details, "rwkvl_compress_report_json: the report has no details (failed or freed)");
    copy_text(report->details->json, out, cap, n_out, "rwkvl_compress_report_json");
  });
}

void rwkvl_compress_report_free(rwkvl_compress_report* report) {
  if (!report) return;
  delete report->details;
  *report = rwkvl_compress_report{};
}

rwkvl_status rwkvl_ffn_sparsity_measure(const rwkvl_model* model, const int32_t* tokens, size_t n, size_t chunk,
                                        int n_threads, rwkvl_compress_progress_fn progress, void* user,
                                        rwkvl_ffn_sparsity* out) {
  if (out) *out = rwkvl_ffn_sparsity{};
  return guarded([&] {
    RWKVL_API_REQUIRE(model && out && (tokens || n == 0), "rwkvl_ffn_sparsity_measure: NULL argument");
    const std::shared_ptr<rwkvl::Model> m = rwkvl::api::model_of(model);
    cz::CalibrationOptions co;
    co.n_threads = n_threads > 0 ? n_threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
    std::function<void(int64_t, int64_t)> fn;
    if (progress) fn = [progress, user](int64_t done, int64_t total) { progress("stats", done, total, user); };
    auto d = std::make_unique<rwkvl_ffn_sparsity_details>();
    d->report = cz::ffn_sparsity(m, tokens, n, chunk == 0 ? 64 : chunk, co, fn);
    d->json = d->report.to_json().dump();
    out->tokens = d->report.tokens;
    out->n_layer = static_cast<int>(d->report.layers.size());
    out->n_ffn = static_cast<int>(d->report.n_ffn);
    out->zero_frac_mean = d->report.zero_frac_mean;
    out->seconds = d->report.seconds;
    out->details = d.release();
  });
}

rwkvl_status rwkvl_ffn_sparsity_get_layer(const rwkvl_ffn_sparsity* s, int layer, rwkvl_ffn_sparsity_layer* out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(s && out && s->details, "rwkvl_ffn_sparsity_get_layer: NULL argument or no details");
    const auto& ls = s->details->report.layers;
    RWKVL_API_REQUIRE(layer >= 0 && static_cast<size_t>(layer) < ls.size(), "layer %d is out of range [0, %zu)", layer,
                      ls.size());
    const cz::FfnSparsityLayer& L = ls[static_cast<size_t>(layer)];
    *out = rwkvl_ffn_sparsity_layer{L.layer,         L.zero_frac_mean, L.zero_frac_p10, L.zero_frac_p50,
                                    L.zero_frac_p90, L.zero_frac_min,  L.zero_frac_max, L.neurons_90,
                                    L.neurons_99,    L.never_active};
  });
}

rwkvl_status rwkvl_ffn_sparsity_json(const rwkvl_ffn_sparsity* s, char* out, size_t cap, size_t* n_out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(s && n_out && (out || cap == 0) && s->details, "rwkvl_ffn_sparsity_json: NULL argument or no details");
    copy_text(s->details->json, out, cap, n_out, "rwkvl_ffn_sparsity_json");
  });
}

void rwkvl_ffn_sparsity_free(rwkvl_ffn_sparsity* s) {
  if (!s) return;
  delete s->details;
  *s = rwkvl_ffn_sparsity{};
}

}  // extern "C"
