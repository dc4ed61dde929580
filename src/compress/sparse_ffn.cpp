#include "compress/sparse_ffn.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <numeric>

#include "compress/calibrate.h"
#include "compress/checkpoint.h"
#include "compress/compress.h"
#include "core/dtype.h"
#include "core/error.h"
#include "runtime/ffn_runtime.h"
#include "runtime/session.h"

namespace rwkvl::compress {

namespace {

double seconds_since(std::chrono::steady_clock::time_point t0) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

}  // namespace

std::pair<Tensor, Tensor> bundle_ffn(const std::string& name, const float* wk, const float* wv, int64_t F, int64_t C,
                                     const std::vector<int32_t>& perm, DType dtype, bool f16_scales) {
  RWKVL_CHECK(static_cast<int64_t>(perm.size()) == F);
  std::vector<float> rows(static_cast<size_t>(2 * F * C));
  for (int64_t j = 0; j < F; ++j) {
    const int64_t i = perm[static_cast<size_t>(j)];
    float* k = rows.data() + (2 * j) * C;
    float* v = k + C;
    std::memcpy(k, wk + i * C, sizeof(float) * static_cast<size_t>(C));
    for (int64_t c = 0; c < C; ++c) v[c] = wv[c * F + i];
  }
  return quantize_matrix(name, rows.data(), 2 * F, C, dtype, f16_scales);
}

void unbundle_ffn(const SparseFfn& s, std::vector<float>* wk, std::vector<float>* wv) {
  const int64_t F = s.n, C = s.layout.cols;
  wk->assign(static_cast<size_t>(F * C), 0.f);
  wv->assign(static_cast<size_t>(C * F), 0.f);
  std::vector<float> row(static_cast<size_t>(C));
  for (int64_t j = 0; j < F; ++j) {
    const int64_t i = s.perm[j];
    kern::get_row(s.layout, 2 * j, wk->data() + i * C);
    kern::get_row(s.layout, 2 * j + 1, row.data());
    for (int64_t c = 0; c < C; ++c) (*wv)[static_cast<size_t>(c * F + i)] = row[static_cast<size_t>(c)];
  }
}

namespace {

void validate(const Model& in, const SparseFfnOptions& opt) {
  const ModelConfig& cfg = in.config();
  const int64_t C = cfg.n_embd;
  if (in.sparse_ffn()) RWKVL_FAIL(kInvalidArgument, "the model's channel-mix is already neuron-bundled");
  for (int l = 0; l < cfg.n_layer; ++l)
    if (in.layer(l).ffn_k.factored() || in.layer(l).ffn_v.factored())
      RWKVL_FAIL(kInvalidArgument,
                 "layer %d's ffn.key/ffn.value are factored: --sparse-ffn bundles dense FFN matrices (leave ffn.key and "
                 "ffn.value out of --targets)",
                 l);
  if (opt.predictors && C % 8 != 0)
    RWKVL_FAIL(kInvalidArgument, "the 1-bit predictor needs a model width divisible by 8, not %lld", static_cast<long long>(C));
  const size_t min_tokens = 64;
  if (opt.calib.size() < min_tokens)
    RWKVL_FAIL(kInvalidArgument, "--sparse-ffn needs calibration text of at least %zu tokens (--calib FILE), got %zu",
               min_tokens, opt.calib.size());
  for (int32_t t : opt.calib)
    if (t < 0 || t >= cfg.n_vocab)
      RWKVL_FAIL(kInvalidArgument, "calibration token %d is out of range [0, %d)", t, cfg.n_vocab);
}

// A dense layer matrix (with its int8 row scales) as float32, row-major.
std::vector<float> matrix_f32(const Matrix& m) { return matrix_to_f32(m.t, m.scale.data ? &m.scale : nullptr); }

// 1. activations of layer l: its key input and which neurons fire, over the calibration text, from the
// layer-by-layer stream (which then moves on to layer l + 1).
void collect_layer(LayerwiseCalibration& cal, const std::shared_ptr<const Model>& in, int l, int64_t N,
                   LayerSamples& s, std::vector<uint64_t>& cnt) {
  const ModelConfig& cfg = in->config();
  const int64_t C = cfg.n_embd, F = cfg.n_ffn;
  s = LayerSamples{};
  s.n = N;
  s.C = C;
  s.F = F;
  s.x.reserve(static_cast<size_t>(N * C));
  s.active.reserve(static_cast<size_t>(N * F));
  cnt.assign(static_cast<size_t>(F), 0);
  // The key input (ffn.key) and relu(k)^2 (the input of ffn.value), tapped by role.
  const TapSet taps = TapSet().add(l, MatRole::kFfnK).add(l, MatRole::kFfnV);
  cal.advance(in, l, taps, [&](int, MatRole r, const float* X, size_t T) {
    if (r == MatRole::kFfnK) {
      s.x.insert(s.x.end(), X, X + T * static_cast<size_t>(C));
      return;
    }
    for (size_t t = 0; t < T; ++t)
      for (int64_t i = 0; i < F; ++i) {
        const uint8_t a = X[t * static_cast<size_t>(F) + static_cast<size_t>(i)] > 0.f;
        s.active.push_back(a);
        cnt[static_cast<size_t>(i)] += a;
      }
  });
}

// 2. neuron order of layer l: hot first (stable, so ties keep the original order); the layer's samples are
// permuted into file order.
std::vector<int32_t> order_layer(const Model& in, int l, const std::vector<uint64_t>& cnt, LayerSamples& s) {
  const int64_t C = in.config().n_embd, F = in.config().n_ffn;
  const int64_t N = s.n;
  std::vector<int32_t> perm(static_cast<size_t>(F));
  std::iota(perm.begin(), perm.end(), 0);
  std::stable_sort(perm.begin(), perm.end(), [&](int32_t a, int32_t b) { return cnt[static_cast<size_t>(a)] > cnt[static_cast<size_t>(b)]; });
  const LayerWeights& lw = in.layer(l);
  const std::vector<float> wk = matrix_f32(lw.ffn_k);
  RWKVL_CHECK(s.x.size() == static_cast<size_t>(N * C) && s.active.size() == static_cast<size_t>(N * F));
  // Permute the targets and Wk rows into file order.
  std::vector<uint8_t> act(s.active.size());
  for (int64_t t = 0; t < N; ++t)
    for (int64_t j = 0; j < F; ++j)
      act[static_cast<size_t>(t * F + j)] = s.active[static_cast<size_t>(t * F + perm[static_cast<size_t>(j)])];
  s.active.swap(act);
  s.wk.resize(static_cast<size_t>(F * C));
  for (int64_t j = 0; j < F; ++j)
    std::memcpy(s.wk.data() + j * C, wk.data() + perm[static_cast<size_t>(j)] * C, sizeof(float) * static_cast<size_t>(C));
  return perm;
}

// The predictor tensors of one layer ("blocks.N." prefix p) into tm; their bytes into rep.
void put_predictor(TensorMap& tm, const std::string& p, const LayerPredictor& pr, int64_t C, int64_t F,
                   const PassMemory& mem, SparseFfnReport& rep) {
  const int64_t H = pr.hidden;
  const bool i8 = !pr.q1.empty();
  Tensor w1 = Tensor::alloc(p + "ffn.pred.w1", i8 ? DType::kI8 : DType::kF16, {H, C});
  std::memcpy(w1.mutable_data(), i8 ? static_cast<const void*>(pr.q1.data()) : pr.w1.data(), w1.nbytes);
  Tensor w2 = Tensor::alloc(p + "ffn.pred.w2", i8 ? DType::kI8 : DType::kF16, {F, H});
  std::memcpy(w2.mutable_data(), i8 ? static_cast<const void*>(pr.q2.data()) : pr.w2.data(), w2.nbytes);
  if (i8) {
    Tensor sc1 = Tensor::alloc(p + "ffn.pred.w1.scale", DType::kF16, {H});
    std::memcpy(sc1.mutable_data(), pr.s1.data(), sc1.nbytes);
    Tensor sc2 = Tensor::alloc(p + "ffn.pred.w2.scale", DType::kF16, {F});
    std::memcpy(sc2.mutable_data(), pr.s2.data(), sc2.nbytes);
    for (Tensor* t : {&sc1, &sc2}) {
      rep.predictor_bytes += t->nbytes;
      tm[t->name] = *t;
    }
  }
  Tensor bits = Tensor::alloc(p + "ffn.pred.bits", DType::kU8, {F, C / 8});
  std::memcpy(bits.mutable_data(), pr.bits.data(), bits.nbytes);
  Tensor lo = Tensor::from_f32(p + "ffn.pred.lo", {F}, pr.lo.data());
  Tensor step = Tensor::from_f32(p + "ffn.pred.step", {F}, pr.step.data());
  const float th[2] = {pr.mlp_logit_thresh, pr.bits_thresh};
  Tensor thr = Tensor::from_f32(p + "ffn.pred.thresh", {2}, th);
  for (Tensor* t : {&w1, &w2, &bits, &lo, &step, &thr}) {
    rep.predictor_bytes += t->nbytes;
    tm[t->name] = mem.keep(*t);
  }
}

// 4. the new tensors of layer l (bundle, permutation, frequencies, predictor) replace its key and value.
SparseFfnLayerReport put_layer(TensorMap& tm, const Model& in, int l, const std::vector<int32_t>& perm,
                               const std::vector<uint64_t>& cnt, int64_t N, DType dt, bool f16_scales,
                               const LayerPredictor* pr, const PassMemory& mem, SparseFfnReport& rep) {
  const ModelConfig& cfg = in.config();
  const int64_t C = cfg.n_embd, F = cfg.n_ffn;
  const std::string p = "blocks." + std::to_string(l) + ".";
  for (const char* n : {"ffn.key.weight", "ffn.key.weight.scale", "ffn.value.weight", "ffn.value.weight.scale"})
    tm.erase(p + n);
  const LayerWeights& lw = in.layer(l);
  {
    const std::vector<float> wk = matrix_f32(lw.ffn_k);
    const std::vector<float> wv = matrix_f32(lw.ffn_v);
    auto [b, sc] = bundle_ffn(p + "ffn.bundle.weight", wk.data(), wv.data(), F, C, perm, dt, f16_scales);
    rep.bundle_bytes += b.nbytes + sc.nbytes;
    tm[b.name] = mem.keep(b);
    if (sc.data) tm[sc.name] = mem.keep(sc);
  }
  Tensor tp = Tensor::alloc(p + "ffn.perm", DType::kI32, {F});
  std::memcpy(tp.mutable_data(), perm.data(), sizeof(int32_t) * static_cast<size_t>(F));
  tm[tp.name] = tp;
  Tensor tf = Tensor::alloc(p + "ffn.freq", DType::kF32, {F});
  SparseFfnLayerReport lr;
  lr.layer = l;
  uint64_t total = 0;
  for (int64_t j = 0; j < F; ++j) {
    const uint64_t c = cnt[static_cast<size_t>(perm[static_cast<size_t>(j)])];
    tf.mutable_f32()[j] = static_cast<float>(static_cast<double>(c) / static_cast<double>(N));
    total += c;
  }
  lr.zero_frac = 1.0 - static_cast<double>(total) / (static_cast<double>(N) * static_cast<double>(F));
  tm[tf.name] = tf;
  if (pr) {
    put_predictor(tm, p, *pr, C, F, mem, rep);
    lr.pred = *pr;
    lr.pred.w1.clear();
    lr.pred.w2.clear();
    lr.pred.q1.clear();
    lr.pred.q2.clear();
    lr.pred.bits.clear();
    lr.pred.lo.clear();
    lr.pred.step.clear();
  }
  return lr;
}

// 5. the pass record
nlohmann::json pass_record(const SparseFfnOptions& opt, const SparseFfnReport& rep, DType dt) {
  nlohmann::json layers = nlohmann::json::array();
  for (const auto& lr : rep.layers) {
    nlohmann::json j = {{"layer", lr.layer}, {"zero_frac", lr.zero_frac}};
    if (opt.predictors) {
      const LayerPredictor& p = lr.pred;
      auto num = [](double v) { return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(v > 0 ? "inf" : "-inf"); };
      j["holdout"] = {{"true_active_frac", p.true_active_frac},
                      {"mlp", {{"recall", p.recall_mlp}, {"active_frac", p.frac_mlp}, {"thresh", num(p.mlp_alone_logit_thresh)}}},
                      {"bits", {{"recall", p.recall_bits}, {"active_frac", p.frac_bits}, {"thresh", num(p.bits_alone_thresh)}}},
                      {"ensemble", {{"recall", p.recall_ens}, {"active_frac", p.frac_ens},
                                    {"mlp_thresh", num(p.mlp_logit_thresh)}, {"bits_thresh", num(p.bits_thresh)}}},
                      {"train_loss", p.train_loss},
                      {"holdout_loss", p.holdout_loss}};
    }
    layers.push_back(j);
  }
  return {{"tool", "rwkv-lite compress"},
          {"sparse_ffn",
           {{"bundle_dtype", dtype_name(dt)},
            {"order", "calibration activation frequency, hot first"},
            {"predictors", opt.predictors},
            {"hidden", opt.predictors ? opt.pred.hidden : 0},
            {"mlp_dtype", opt.pred.int8 ? "i8 (f16 row scales)" : "f16"},
            {"epochs", opt.pred.epochs},
            {"recall_target", opt.recall_target > 0 ? opt.recall_target : opt.pred.recall},
            {"recall_holdout", opt.pred.recall},
            {"lr", opt.pred.lr},
            {"holdout", opt.pred.holdout},
            {"seed", opt.pred.seed},
            {"predictor_bytes", rep.predictor_bytes},
            {"layers", layers}}},
          {"calibration", {{"file", opt.calib_name}, {"fnv1a64", opt.calib_hash}, {"tokens", opt.calib.size()}}}};
}

}  // namespace

std::shared_ptr<Model> sparse_ffn(const std::shared_ptr<const Model>& in, const SparseFfnOptions& opt,
                                  SparseFfnReport* report) {
  SparseFfnReport local;
  SparseFfnReport& rep = report ? *report : local;
  rep = SparseFfnReport{};
  const ModelConfig& cfg = in->config();
  const int64_t C = cfg.n_embd;
  const int L = cfg.n_layer;
  validate(*in, opt);

  // Output dtype of the bundles.
  const Tensor& k0 = in->tensors().at("blocks.0.ffn.key.weight");
  DType dt = opt.dtype.empty() ? k0.dtype : parse_weight_dtype(opt.dtype);
  if (dt == DType::kF16S24) dt = DType::kF16;  // 2:4 packed (pruned) FFN: bundles are dense f16 rows with the zeros
  if (dtype_is_masked(dt)) dt = masked_value_dtype(dt);  // masked (pruned): dense rows of the kept values' dtype
  bool f16_scales = true;
  if (opt.dtype.empty() && dt == DType::kI8) {
    auto it = in->tensors().find("blocks.0.ffn.key.weight.scale");
    f16_scales = it != in->tensors().end() && it->second.dtype == DType::kF16;
  }
  if (dt == DType::kQ4 && C % 32 != 0)
    RWKVL_FAIL(kInvalidArgument, "q4 bundles need a width divisible by 32, not %lld", static_cast<long long>(C));

  // Layer by layer (in groups of as many layers as there are training threads, trained side by side): the
  // calibration stream enters the layer, its activations are collected, its neurons ordered, its predictor
  // trained and its tensors replaced; then its samples are dropped. Memory: the stream plus one group's
  // samples, not every layer's.
  const int64_t N = static_cast<int64_t>(opt.calib.size());
  const int group = std::max(1, std::min(opt.group > 0 ? opt.group : opt.pred.n_threads, L));
  LayerwiseCalibration cal(in, opt.calib, opt.n_threads, static_cast<size_t>(std::max(1, opt.chunk)));
  TensorMap tm = in->tensors();
  const int64_t layer_steps = 1 + (opt.predictors ? opt.pred.epochs + 1 : 0), total_steps = L * layer_steps;
  int first = 0;  // layers done before (a resumed run: see checkpoint.h)
  Checkpoint* ck = opt.mem.checkpoint;
  if (const ResumePoint* rp = ck ? ck->resume_point() : nullptr; rp && rp->stage == Stage::kSparseFfn && rp->unit > 0) {
    if (rp->unit >= L) RWKVL_FAIL(kFormat, "the journal does not match this sparse FFN pass");
    first = rp->unit;
    tm = rp->current;
    rep = sparse_report_from_json(rp->state);
    cal.load(rp->calibration);
    if (cal.next_layer() != first) RWKVL_FAIL(kFormat, "the journal's calibration snapshot is of another layer");
  }
  int64_t steps = first * layer_steps;
  auto tell = [&](int64_t done) {
    if (opt.progress) opt.progress(done, total_steps);
  };
  tell(steps);
  for (int l0 = first; l0 < L; l0 += group) {
    const int n = std::min(group, L - l0);
    std::vector<LayerSamples> samples(static_cast<size_t>(n));
    std::vector<std::vector<uint64_t>> counts(static_cast<size_t>(n));
    std::vector<std::vector<int32_t>> perms(static_cast<size_t>(n));
    const auto t_collect = std::chrono::steady_clock::now();
    for (int i = 0; i < n; ++i) {
      const size_t k = static_cast<size_t>(i);
      collect_layer(cal, in, l0 + i, N, samples[k], counts[k]);
      perms[k] = order_layer(*in, l0 + i, counts[k], samples[k]);
      tell(++steps);
    }
    rep.seconds_collect += seconds_since(t_collect);

    std::vector<LayerPredictor> preds;
    const auto t_train = std::chrono::steady_clock::now();
    if (opt.predictors) {
      PredictorOptions po = opt.pred;
      po.first_layer = l0;
      const int64_t before = steps;
      po.progress = [&tell, before](int64_t done, int64_t) { tell(before + done); };
      preds = train_predictors(samples, po);
      steps = before + static_cast<int64_t>(n) * (opt.pred.epochs + 1);
    }
    rep.seconds_train += seconds_since(t_train);
    for (int i = 0; i < n; ++i) {
      const size_t k = static_cast<size_t>(i);
      rep.layers.push_back(put_layer(tm, *in, l0 + i, perms[k], counts[k], N, dt, f16_scales,
                                     opt.predictors ? &preds[k] : nullptr, opt.mem, rep));
    }
    opt.mem.release();
    if (ck && l0 + n < L) ck->save(l0 + n, tm, sparse_report_json(rep), &cal);
  }
  rep.pass = pass_record(opt, rep, dt);
  return model_with_pass(std::move(tm), cfg, *in, rep.pass);
}

}  // namespace rwkvl::compress
