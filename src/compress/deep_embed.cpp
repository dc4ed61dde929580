#include "compress/deep_embed.h"

#include <algorithm>
#include <chrono>
#include <numeric>
#include <thread>

#include "compress/compress.h"
#include "core/error.h"
#include "core/threadpool.h"
#include "model/ops.h"

namespace rwkvl::compress {

namespace {

// Layer l's table with s_emb_x ln0(emb[v]) added to every row v, in blocks of tokens (one matrix product per block).
std::vector<float> merged_table(const Model& m, int l, ThreadPool* pool) {
  const ModelConfig& c = m.config();
  const LayerWeights& L = m.layer(l);
  const size_t V = static_cast<size_t>(c.n_vocab), C = static_cast<size_t>(c.n_embd),
               RR = static_cast<size_t>(L.de_emb.cols);
  std::vector<float> out(V * RR);
  constexpr size_t kBlock = 256;
  std::vector<float> E(kBlock * C), M(kBlock * RR);
  for (size_t v0 = 0; v0 < V; v0 += kBlock) {
    const size_t n = std::min(kBlock, V - v0);
    for (size_t t = 0; t < n; ++t) {
      kern::get_row(m.emb().ref, static_cast<int64_t>(v0 + t), E.data() + t * C);
      ops::layer_norm(E.data() + t * C, E.data() + t * C, m.ln0_w(), m.ln0_b(), C, c.ln_eps);
    }
    kern::matmul(L.de_emb_x.ref, E.data(), static_cast<int64_t>(n), M.data(), pool);
    for (size_t t = 0; t < n; ++t) {
      float* row = out.data() + (v0 + t) * RR;
      kern::get_row(L.de_emb.ref, static_cast<int64_t>(v0 + t), row);
      for (size_t j = 0; j < RR; ++j) row[j] += M[t * RR + j];
    }
  }
  return out;
}

// The calibration's most frequent tokens, most frequent first (ties: lower id first), at most `most`.
std::vector<int32_t> hot_tokens(const std::vector<int32_t>& calib, int32_t V, int64_t most, double* share) {
  std::vector<uint64_t> count(static_cast<size_t>(V), 0);
  for (int32_t t : calib)
    if (t >= 0 && t < V) ++count[static_cast<size_t>(t)];
  std::vector<int32_t> ids(static_cast<size_t>(V));
  std::iota(ids.begin(), ids.end(), 0);
  std::stable_sort(ids.begin(), ids.end(),
                   [&](int32_t a, int32_t b) { return count[static_cast<size_t>(a)] > count[static_cast<size_t>(b)]; });
  std::vector<int32_t> hot;
  uint64_t covered = 0;
  for (int32_t id : ids) {
    if (static_cast<int64_t>(hot.size()) >= most || count[static_cast<size_t>(id)] == 0) break;
    hot.push_back(id);
    covered += count[static_cast<size_t>(id)];
  }
  *share = calib.empty() ? 0.0 : static_cast<double>(covered) / static_cast<double>(calib.size());
  return hot;
}

}  // namespace

std::shared_ptr<Model> deep_embed(const std::shared_ptr<const Model>& in, const DeepEmbedOptions& o,
                                  DeepEmbedReport* report) {
  DeepEmbedReport local;
  DeepEmbedReport& rep = report ? *report : local;
  const auto t0 = std::chrono::steady_clock::now();
  const ModelConfig& c = in->config();
  if (c.de_rank <= 0)
    RWKVL_FAIL(kInvalidArgument, "--deep-embed needs an RWKV-7a model (DeepEmbed tables); this one is %s",
               c.arch_name().c_str());
  if (o.hot < 0) RWKVL_FAIL(kInvalidArgument, "hot tokens: %lld (give 0 or more)", static_cast<long long>(o.hot));
  auto is_float = [](DType d) { return d == DType::kF32 || d == DType::kF16 || d == DType::kBF16; };
  for (int l = 0; l < c.n_layer; ++l)
    if (!in->layer(l).de_emb_x.empty() && !is_float(in->layer(l).de_emb.ref.dtype))
      RWKVL_FAIL(kInvalidArgument, "layer %d's DeepEmbed table is %s: merge s_emb_x into it before quantising it", l,
                 dtype_name(in->layer(l).de_emb.ref.dtype));
  const int threads =
      o.n_threads > 0 ? o.n_threads : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  ThreadPool pool(threads);
  TensorMap tm = in->tensors();
  rep.layers_merged = 0;
  for (int l = 0; l < c.n_layer; ++l) {
    if (o.progress) o.progress(l, c.n_layer);
    const LayerWeights& L = in->layer(l);
    if (L.de_emb_x.empty()) continue;
    const std::string p = "blocks." + std::to_string(l) + ".ffn.";
    const std::vector<float> t = merged_table(*in, l, &pool);
    const Tensor& old = tm.at(p + "s_emb.weight");
    auto [q, s] = quantize_matrix(p + "s_emb.weight", t.data(), old.rows(), old.cols(), old.dtype, false);
    tm[q.name] = q;
    for (const char* n : {"s_emb_x.weight", "s_emb_x.weight.scale"}) tm.erase(p + n);
    ++rep.layers_merged;
  }
  if (o.progress) o.progress(c.n_layer, c.n_layer);
  std::vector<int32_t> hot;
  rep.hot_share = 0;
  if (!o.calib.empty() && o.hot > 0) hot = hot_tokens(o.calib, c.n_vocab, o.hot, &rep.hot_share);
  rep.hot_tokens = static_cast<int64_t>(hot.size());
  nlohmann::json d = {
      {"rank", c.de_rank}, {"merged_layers", rep.layers_merged}, {"hot_tokens", hot}, {"hot_share", rep.hot_share}};
  if (!o.calib.empty())
    d["calibration"] = {{"file", o.calib_name}, {"fnv1a64", o.calib_hash}, {"tokens", o.calib.size()}};
  rep.pass = {{"tool", "rwkv-lite compress"}, {"deep_embed", d}};
  auto out = model_with_pass(std::move(tm), c, *in, rep.pass);
  rep.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  return out;
}

}  // namespace rwkvl::compress
