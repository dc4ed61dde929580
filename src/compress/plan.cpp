#include "compress/plan.h"

#include <algorithm>
#include <cmath>
#include <thread>

#include "core/error.h"

namespace rwkvl::compress {

namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr int64_t kChunk = 128;  // calibration tokens per forward chunk (the passes' default)

// The shapes and counts every estimate uses.
struct Shape {
  double N = 0, C = 0, F = 0, V = 0, L = 0, H = 0, K = 0, dims = 0;
  double layer_params = 0;  // weights of one block (the projections and the FFN)
  bool v7 = false;
};

Shape shape_of(const Model& in, const Recipe& r, size_t calib_tokens) {
  const ModelConfig& c = in.config();
  Shape s;
  s.N = static_cast<double>(calib_tokens);
  s.C = c.n_embd;
  s.F = c.n_ffn;
  s.V = c.n_vocab;
  s.L = c.n_layer;
  s.H = r.sparse_ffn.hidden;
  // k-means clusters, then those above the cap split: at least V / cap of them.
  s.K = std::max<double>(r.cluster_head.k, std::ceil(s.V / std::max(1, r.cluster_head.cap))) + r.cluster_head.k / 4.0;
  s.dims = std::min<double>(r.cluster_head.pca_dims, s.C);
  s.layer_params = 4 * s.C * s.C + 2 * s.C * s.F + (c.has_gate ? s.C * s.C : 0);
  s.v7 = c.arch_major == 7;
  return s;
}

// The layer-by-layer calibration stream: each token's residual (and RWKV-7's v_first), float32.
double stream_bytes(const Shape& s) { return s.N * s.C * 4 * (s.v7 ? 2 : 1); }
// One forward session's scratch for a chunk, and the float copy of a wide matrix.
double scratch_bytes(const Shape& s) { return kChunk * (12 * s.C + 2 * s.F) * 4; }

StagePlan lowrank_quant_stage(const Shape& s, const Recipe& r, int threads) {
  StagePlan p;
  const bool lowrank = r.lowrank.method != LowRankMethod::kNone;
  const bool calibrated = lowrank && s.N > 0;
  const double targets = 4;  // Gram matrices of one stage of one layer (at most r, k, v, g)
  const double n = s.C;      // the targets' inputs are C wide (att.output's too)
  const double side_by_side = std::min<double>(threads, 3);  // a stage's matrices are factored side by side
  double bytes = 0;
  // The stream, the Gram matrices, the layer's input pages (f16) the calibration pass reads.
  if (calibrated) bytes += stream_bytes(s) + scratch_bytes(s) + targets * n * n * 8 + s.layer_params * 2;
  // Per matrix: W as float32 and the factorisation's copies in double (the Cholesky factor, W L, the SVD's
  // bidiagonal work, U and V: about 10 n^2 doubles, measured on the 1.5B shape).
  if (lowrank) bytes += side_by_side * (s.C * s.C * 4 + 10 * s.C * s.C * 8);
  // Conversion of the other matrices: 16 MiB of float rows at a time and their converted bytes.
  bytes = std::max(bytes, (calibrated ? stream_bytes(s) : 0) + 2.0 * 16 * kMiB);
  p.peak_bytes = static_cast<uint64_t>(bytes);
  // Work: per layer an advance pass and a collect pass that stops after the time-mix projections (about a quarter
  // of a layer), two SVDs per target (about 10 m n min(m, n) each), side by side.
  const double fwd = calibrated ? 1.25 * s.N * s.L * s.layer_params * 2 : 0;
  const double svd = lowrank ? 3 * s.L * 2 * 10 * s.C * s.C * s.C : 0;
  p.work = fwd / 84e9 + svd / (6.8e9 * side_by_side) + s.L * s.layer_params * 2 / 2e9;
  return p;
}

// One layer's predictor samples: inputs (N x C floats), activity (N x F bytes), Wk as float32.
double sparse_layer_bytes(const Shape& s) { return s.N * s.C * 4 + s.N * s.F + s.F * s.C * 4; }

StagePlan sparse_stage(const Shape& s, const Recipe& r, int group) {
  StagePlan p;
  const double holdout = r.sparse_ffn.holdout * s.N;
  const double train = r.sparse_ffn.predictors ? 256 * s.F * 4 * 8 : 0;          // mini-batch matrices per layer
  const double eval = r.sparse_ffn.predictors ? 16 * holdout * s.F : 0;  // both scores and the pairs being sorted
  const double collect = s.N * s.F + 2 * s.F * s.C * 4;                          // the reordered activity, Wk
  const double put = 4 * s.F * s.C * 4;                                          // Wk, Wv, the bundle rows
  const double phase = std::max({group * train, eval, collect, put});
  p.peak_bytes = static_cast<uint64_t>(stream_bytes(s) + scratch_bytes(s) + group * sparse_layer_bytes(s) + phase);
  const double fwd = s.N * s.L * s.layer_params * 2;
  const double epochs = r.sparse_ffn.predictors ? r.sparse_ffn.epochs : 0;
  const double mlp = s.L * epochs * (s.N - holdout) * (s.C * s.H + s.H * s.F) * 6;
  p.work = fwd / 84e9 + mlp / 46e9 + (r.sparse_ffn.predictors ? s.L * holdout * s.F * 60 / 1e9 : 0);
  return p;
}

StagePlan cluster_stage(const Shape& s, const Recipe& r) {
  StagePlan p;
  const double proj = s.V * s.dims * 4;
  const double clustering = 2 * proj + s.V * 16 + 3 * s.C * s.C * 8 + 4096 * s.C * 8 * 2;
  const double calibration = stream_bytes(s) + scratch_bytes(s) + s.N * s.K * 4 + kChunk * s.V * 4 + s.V * 8;
  const double hold = 0.1 * s.N;
  const double distillation = s.N * s.C * 4 + s.N * s.K * 4 + hold * s.K * 4 * 2 + s.C * s.K * 4 * 6;
  p.peak_bytes = static_cast<uint64_t>(std::max({clustering, calibration, distillation}));
  const double kmeans = 30 * s.V * s.dims * r.cluster_head.k * 2 + s.V * s.C * s.C * 2 * 2;
  const double fwd = s.N * s.L * s.layer_params * 2 + s.N * s.V * s.C * 2;
  const double distil = r.cluster_head.epochs * s.N * s.C * s.K * 6;
  p.work = kmeans / 19e9 + fwd / 84e9 + s.N * s.V * 25 / 1e9 + distil / 71e9;
  return p;
}

// A stage's working set as resident memory: plus what the allocator keeps of freed buffers (measured: about 8 %
// over the working set on the 0.1B shape) and the base.
uint64_t with_base(uint64_t working, uint64_t base) {
  return static_cast<uint64_t>(static_cast<double>(working) * 1.08) + base;
}

}  // namespace

nlohmann::json CompressPlan::to_json() const {
  nlohmann::json stages = nlohmann::json::object();
  for (const auto& [name, st] : {std::pair<const char*, const StagePlan*>{"lowrank_quant", &lowrank_quant},
                                 {"sparse_ffn", &sparse_ffn},
                                 {"cluster_head", &cluster_head},
                                 {"save", &save}})
    if (st->runs) stages[name] = {{"peak_bytes", st->peak_bytes}, {"work", st->work}};
  return {{"base_bytes", base_bytes},
          {"peak_bytes", peak_bytes},
          {"budget", budget},
          {"sparse_parallel_layers", sparse_parallel_layers},
          {"stages", stages}};
}

CompressPlan plan_compress(const Model& in, const Recipe& r, size_t calib_tokens, uint64_t mem_budget) {
  const Shape s = shape_of(in, r, calib_tokens);
  const int threads = r.n_threads > 0 ? r.n_threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  CompressPlan plan;
  plan.budget = mem_budget;
  // Code and libraries, the tokenizer, the calibration text and tokens, the model's small tensors.
  plan.base_bytes = 96 * kMiB + static_cast<uint64_t>(s.N * 4) + static_cast<uint64_t>(s.L * s.C * 64);
  const bool stage1 = r.lowrank.method != LowRankMethod::kNone || r.quant.type != Quant::kNone || r.quant.emb ||
                      r.quant.head || !r.dtype.empty() || (!r.sparse_ffn.enabled && !r.cluster_head.enabled);
  if (stage1) plan.lowrank_quant = lowrank_quant_stage(s, r, threads);
  plan.lowrank_quant.runs = stage1;
  if (r.cluster_head.enabled) plan.cluster_head = cluster_stage(s, r);
  plan.cluster_head.runs = r.cluster_head.enabled;
  plan.save.runs = true;
  plan.save.peak_bytes = 2 * 16 * kMiB;
  plan.save.work = 0;
  int group = std::max(1, std::min(threads, static_cast<int>(s.L)));
  if (r.sparse_ffn.enabled) {
    plan.sparse_ffn = sparse_stage(s, r, group);
    // Under a budget, fewer layers side by side (the same output: the layers do not depend on each other).
    while (mem_budget > 0 && group > 1 && with_base(plan.sparse_ffn.peak_bytes, plan.base_bytes) > mem_budget)
      plan.sparse_ffn = sparse_stage(s, r, --group);
  }
  plan.sparse_ffn.runs = r.sparse_ffn.enabled;
  plan.sparse_parallel_layers = group;
  double total_work = 0;
  for (StagePlan* st : {&plan.lowrank_quant, &plan.sparse_ffn, &plan.cluster_head, &plan.save}) {
    if (!st->runs) continue;
    st->peak_bytes = with_base(st->peak_bytes, plan.base_bytes);
    plan.peak_bytes = std::max(plan.peak_bytes, st->peak_bytes);
    total_work += st->work;
  }
  for (StagePlan* st : {&plan.lowrank_quant, &plan.sparse_ffn, &plan.cluster_head, &plan.save})
    st->work = st->runs && total_work > 0 ? st->work / total_work : 0;
  if (mem_budget > 0 && plan.peak_bytes > mem_budget) {
    const char* name = "save";
    const StagePlan* worst = &plan.save;
    for (const auto& [n, st] : {std::pair<const char*, const StagePlan*>{"low-rank/quantisation", &plan.lowrank_quant},
                                {"sparse FFN", &plan.sparse_ffn},
                                {"cluster head", &plan.cluster_head}})
      if (st->runs && st->peak_bytes > worst->peak_bytes) {
        worst = st;
        name = n;
      }
    RWKVL_FAIL(kInvalidArgument,
               "compress needs about %.0f MiB in its %s stage (%zu calibration tokens%s), more than the memory budget of "
               "%.0f MiB: give fewer calibration tokens (--calib-tokens) or a larger budget",
               static_cast<double>(worst->peak_bytes) / kMiB, name, calib_tokens,
               worst == &plan.sparse_ffn ? ", one layer at a time" : "", static_cast<double>(mem_budget) / kMiB);
  }
  return plan;
}

}  // namespace rwkvl::compress
