#include "runtime/session.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "core/mapped_file.h"
#include "core/threadpool.h"
#include "model/ops.h"
#include "runtime/deep_embed_cache.h"
#include "runtime/emb_cache.h"
#include "runtime/layer_stream.h"
#include "runtime/planner.h"
#include "runtime/sysinfo.h"

namespace rwkvl {

namespace {

// The expected share of head rows a cluster head reads per token, as measured on held-out text when the file
// was made (0.25 when the file does not say).
double head_rows_frac(const Model& m) {
  double frac = 0.25;
  for (const auto& pass : m.passes())
    if (pass.is_object() && pass.contains("cluster_head") && pass["cluster_head"].contains("heldout") &&
        pass["cluster_head"]["heldout"].contains("rows_frac") && pass["cluster_head"]["heldout"]["rows_frac"].is_number())
      frac = pass["cluster_head"]["heldout"]["rows_frac"].get<double>();
  return frac;
}

// Per cluster, the share of calibration tokens whose selection included it (the cluster head pass's "usage";
// empty when the file does not say).
std::vector<double> cluster_usage(const Model& m, const char* key = "usage") {
  std::vector<double> u;
  for (const auto& pass : m.passes())
    if (pass.is_object() && pass.contains("cluster_head") && pass["cluster_head"].is_object() &&
        pass["cluster_head"].contains(key) && pass["cluster_head"][key].is_array()) {
      u.clear();
      for (const auto& v : pass["cluster_head"][key]) u.push_back(v.is_number() ? v.get<double>() : 0.0);
    }
  if (u.size() != static_cast<size_t>(std::max<int64_t>(0, m.cluster_head().k))) u.clear();
  return u;
}

// Per cluster, the calibration loss increase when it alone is read at int4 (the cluster head pass's
// "fidelities.loss_low"; empty when the file has no int4 version).
std::vector<double> cluster_loss_low(const Model& m) {
  std::vector<double> u;
  if (!m.cluster_head().has_low()) return u;
  for (const auto& pass : m.passes())
    if (pass.is_object() && pass.contains("cluster_head") && pass["cluster_head"].is_object() &&
        pass["cluster_head"].contains("fidelities") && pass["cluster_head"]["fidelities"].is_object() &&
        pass["cluster_head"]["fidelities"].contains("loss_low") && pass["cluster_head"]["fidelities"]["loss_low"].is_array()) {
      u.clear();
      for (const auto& v : pass["cluster_head"]["fidelities"]["loss_low"]) u.push_back(v.is_number() ? v.get<double>() : 0.0);
    }
  if (u.size() != static_cast<size_t>(std::max<int64_t>(0, m.cluster_head().k))) u.clear();
  return u;
}

// The share of neurons the FFN predictors pick per token, as measured on held-out text when the file was made
// (the mean of the layers' ensemble "active_frac"; 0.4 when the file does not say).
double ffn_active_frac(const Model& m) {
  double sum = 0;
  int n = 0;
  for (const auto& pass : m.passes())
    if (pass.is_object() && pass.contains("sparse_ffn") && pass["sparse_ffn"].contains("layers") && pass["sparse_ffn"]["layers"].is_array())
      for (const auto& l : pass["sparse_ffn"]["layers"]) {
        const auto* e = l.contains("holdout") && l["holdout"].contains("ensemble") ? &l["holdout"]["ensemble"] : nullptr;
        if (e && e->contains("active_frac") && (*e)["active_frac"].is_number()) {
          sum += (*e)["active_frac"].get<double>();
          ++n;
        }
      }
  return n ? std::clamp(sum / n, 0.0, 1.0) : 0.4;
}

}  // namespace

Session::Session(std::shared_ptr<const Model> model, const SessionParams& params)
    : model_(std::move(model)), params_(params) {
  RWKVL_CHECK(model_ != nullptr);
  if (params_.threads < 1) RWKVL_FAIL(kInvalidArgument, "a session needs at least one thread, got %d", params_.threads);
  pool_ = std::make_unique<ThreadPool>(params_.threads);
  head_ = std::make_unique<HeadRuntime>(*model_, pool_.get(), params_.head);
  FfnOptions ffn = params_.ffn;
  if (params_.memory.budget == 0 && (params_.memory.latency_target > 0 || params_.memory.fidelity != MemoryRequest::Fidelity::kAuto))
    RWKVL_FAIL(kInvalidArgument, "a latency target and a head fidelity are plans under a memory budget: give a budget (--mem-budget) too");
  if (params_.memory.budget == 0) {
    make_emb_cache(params_.memory.emb_rows > 0 ? params_.memory.emb_rows : 0);
    int64_t de = params_.memory.de_rows;
    const bool on_disk = model_->file() && model_->file()->on_disk();
    if (de < 0) de = on_disk && deep_embed_table_bytes(*model_) >= params_.memory.de_on_storage ? kDeepEmbedSlots : 0;
    make_deep_embed_cache(de);
  } else {
    plan_memory_parts(ffn);
  }
  ffn.storage = ffn.cache_bytes > 0 ? need_storage() : nullptr;
  ffn_ = std::make_unique<FfnRuntime>(*model_, pool_.get(), ffn);
}

Session::~Session() = default;

// The simulated device every read from the model file goes through, opened when a part first reads the file
// (null for models that are not native files on disk: their weights live in memory).
const std::shared_ptr<Storage>& Session::need_storage() {
  const auto& f = model_->file();
  if (!storage_ && f && f->on_disk()) storage_ = std::make_shared<Storage>(f->path(), params_.storage);
  return storage_;
}

// Under a budget: measures the baseline, makes the plan, and builds what it streams (embedding cache, layer
// stream, head stream); the FFN cache is the plan's (a cache the caller asked for is replaced).
void Session::plan_memory_parts(FfnOptions& ffn) {
  const MemoryOptions& o = params_.memory;
  MemoryRequest r;
  r.budget = o.budget;
  r.prefetch = o.prefetch;
  r.emb_rows = o.emb_rows;
  r.de_rows = o.de_rows;
  r.reserve = o.reserve;
  r.threads = params_.threads;
  r.chunk = o.chunk;
  r.cluster_head = head_->mode() == HeadMode::kCluster;
  r.head_compare = head_->options().compare;
  r.head_rows_frac = head_rows_frac(*model_);
  if (r.cluster_head) r.cluster_usage = cluster_usage(*model_);
  if (r.cluster_head) r.cluster_usage_next = cluster_usage(*model_, "usage_next");
  r.ffn_active_frac = ffn_active_frac(*model_);
  r.storage = params_.storage;
  if (r.cluster_head) r.cluster_loss_low = cluster_loss_low(*model_);
  r.fidelity = o.fidelity;
  r.latency_target = o.latency_target;
  r.compute_seconds = o.compute_seconds;
  if (o.fidelity == MemoryRequest::Fidelity::kLow && !r.cluster_head)
    RWKVL_FAIL(kInvalidArgument, "fidelity int4 applies to the head clusters: it needs the cluster head (head mode cluster)");
  // The small tensors are resident under every plan: touch them first, so the measured RSS holds them
  // and the plan does not count them twice. A baseline the caller gives replaces the measurement.
  const uint64_t small = touch_small_tensors(*model_);
  release_big_parts(*model_);
  if (o.baseline) {
    r.baseline = o.baseline;
  } else {
    const uint64_t rss = current_rss_bytes();
    r.baseline = rss > small ? rss - small : 0;
  }
  plan_ = std::make_unique<MemoryPlan>(plan_memory(*model_, r));
  make_emb_cache(plan_->emb_rows);
  make_deep_embed_cache(plan_->de_rows);
  bool any = false;
  for (bool b : plan_->layer_streamed) any = any || b;
  if (any)
    stream_ = std::make_unique<LayerStream>(*model_, need_storage(), plan_->layer_streamed, plan_->prefetch ? 2 : 1,
                                            plan_->prefetch && o.reader);
  if (plan_->head_streamed)
    head_->set_stream(need_storage(), plan_->head_buffer, plan_->head_resident_clusters, plan_->head_low_clusters);
  ffn.cache_bytes = plan_->ffn_streamed ? plan_->ffn_cache : 0;
  plan_chunk_ = std::max<size_t>(1, o.chunk);
}

void Session::make_emb_cache(int64_t rows) {
  if (rows <= 0) return;
  const kern::MatRef& e = model_->emb().ref;
  const auto& f = model_->file();
  const auto* p = static_cast<const uint8_t*>(e.data);
  const bool in_file = f && p >= f->data() && p < f->data() + f->size();
  const std::shared_ptr<Storage> st = in_file ? need_storage() : nullptr;
  emb_cache_ = std::make_unique<EmbCache>(e, st, st ? static_cast<uint64_t>(p - f->data()) : 0, rows);
}

namespace {

// The file's hot tokens (most frequent first) for the DeepEmbed cache's pinned slots: the deep_embed pass's
// "hot_tokens" (compress --deep-embed merges the tables and counts them on calibration text); none otherwise.
std::vector<int32_t> deep_embed_hot_tokens(const Model& m) {
  std::vector<int32_t> v;
  for (const auto& pass : m.passes())
    if (pass.is_object() && pass.contains("deep_embed") && pass["deep_embed"].is_object() &&
        pass["deep_embed"].contains("hot_tokens") && pass["deep_embed"]["hot_tokens"].is_array()) {
      v.clear();
      for (const auto& t : pass["deep_embed"]["hot_tokens"])
        if (t.is_number_integer()) v.push_back(t.get<int32_t>());
    }
  return v;
}

}  // namespace

// slots > 0: the tables are read through a row cache of that many tokens, from the file when they lie in it (else
// copied from memory); the tables' mapped pages are never touched.
void Session::make_deep_embed_cache(int64_t slots) {
  const ModelConfig& cfg = model_->config();
  if (slots <= 0 || cfg.de_rank <= 0) return;
  const auto& f = model_->file();
  std::vector<DeepEmbedCache::Table> tables;
  bool in_file = f != nullptr;
  for (int l = 0; l < cfg.n_layer; ++l) {
    const kern::MatRef& r = model_->layer(l).de_emb.ref;
    const auto* p = static_cast<const uint8_t*>(r.data);
    in_file = in_file && p >= f->data() && p + kern::mat_bytes(r) <= f->data() + f->size();
    tables.push_back({r, in_file ? static_cast<uint64_t>(p - f->data()) : 0});
  }
  const std::shared_ptr<Storage> st = in_file ? need_storage() : nullptr;
  if (!st)
    for (auto& t : tables) t.file_offset = 0;
  // From the file: a background reader (up to 4 on a simulated device that serves several reads at once) reads a
  // chunk's rows while its first layers run.
  const int readers = st ? std::clamp(st->options().mb_per_s > 0 ? st->options().queue : 1, 1, 4) : 0;
  de_cache_ = std::make_unique<DeepEmbedCache>(std::move(tables), st, slots, deep_embed_hot_tokens(*model_), readers);
}

void Session::reset_memory_stats() {
  if (emb_cache_) emb_cache_->reset_stats();
  if (de_cache_) de_cache_->reset_stats();
  if (storage_) storage_->reset_stats();
  if (stream_) stream_->reset_stats();
}

const LayerWeights& Session::layer(int l) { return stream_ ? stream_->acquire(l) : model_->layer(l); }

void Session::ffn_key_value(const LayerWeights& L, const float* xk, float* out, size_t T, const SideProjection& side,
                            const float* gate) {
  ffn_->forward(*this, L, xk, out, T, side, gate);
}

// The table rows are read where the table is (mapped file or memory); with s_emb_x stored, each row gains
// s_emb_x ln0(emb[token]), the tokens embedded as embed() embeds them for layer 0.
// With the row cache, the chunk's rows were fetched before its first layer (eval_chunk, forward_layers).
void Session::deep_embed_rows(const LayerWeights& L, const int32_t* tokens, size_t T, float* rows) {
  const size_t RR = static_cast<size_t>(L.de_emb.cols), C = static_cast<size_t>(model_->config().n_embd);
  for (size_t t = 0; t < T; ++t) {
    if (de_cache_) de_cache_->row(L.index, tokens[t], rows + t * RR);
    else kern::get_row(L.de_emb.ref, tokens[t], rows + t * RR);
  }
  if (L.de_emb_x.empty()) return;
  de_e_.resize(T * C);
  de_m_.resize(T * RR);
  embed(tokens, T, de_e_.data());
  ops::project(*this, L.de_emb_x, de_e_.data(), de_m_.data(), T);
  for (size_t i = 0; i < T * RR; ++i) rows[i] += de_m_[i];
}

void Session::eval(State& state, const int32_t* tokens, size_t n, size_t chunk, float* logits_last, float* logits_all) {
  const ModelConfig& cfg = model_->config();
  if (state.data.size() != State::floats_for(cfg))
    RWKVL_FAIL(kInvalidArgument, "state has %zu values, the model needs %zu", state.data.size(), State::floats_for(cfg));
  for (size_t i = 0; i < n; ++i)
    if (tokens[i] < 0 || tokens[i] >= cfg.n_vocab)
      RWKVL_FAIL(kInvalidArgument, "token id %d at position %zu is out of range [0, %d)", tokens[i], i, cfg.n_vocab);
  // A model file overwritten in place (cp onto it, a conversion to the same path without rename) changes the
  // weights under the mapping: refuse to run on them (one stat(2) per call).
  if (model_file_changed(*model_))
    RWKVL_FAIL(kIo, "model file '%s' was modified while in use (its weights changed under the running process)",
               model_->path().c_str());
  if (chunk == 0) chunk = 32;
  // The scratch grows with the chunk (about 22 activation rows per token), and past a few hundred tokens a longer
  // chunk is no faster: a caller's huge chunk is cut to kMaxChunk instead of allocating gigabytes.
  if (chunk > kMaxChunk) chunk = kMaxChunk;
  if (plan_ && chunk > plan_chunk_) chunk = plan_chunk_;  // the plan's scratch is sized for this many tokens
  for (size_t done = 0; done < n; done += chunk) {
    const size_t T = std::min(chunk, n - done);
    const bool last = done + T == n;
    eval_chunk(state, tokens + done, T, last ? logits_last : nullptr,
               logits_all ? logits_all + done * static_cast<size_t>(cfg.n_vocab) : nullptr);
  }
}

void Session::embed(const int32_t* tokens, size_t T, float* x) {
  const ModelConfig& cfg = model_->config();
  const size_t C = static_cast<size_t>(cfg.n_embd);
  const Matrix& emb = model_->emb();
  for (size_t t = 0; t < T; ++t) {
    if (tokens[t] < 0 || tokens[t] >= cfg.n_vocab)
      RWKVL_FAIL(kInvalidArgument, "token id %d is out of range [0, %d)", tokens[t], cfg.n_vocab);
    if (emb_cache_) emb_cache_->get(tokens[t], x + t * C);
    else kern::get_row(emb.ref, tokens[t], x + t * C);
    ops::layer_norm(x + t * C, x + t * C, model_->ln0_w(), model_->ln0_b(), C, cfg.ln_eps);
    if (!all_finite(x + t * C, C))
      fail_nonfinite(*model_, "in the embedding of token " + std::to_string(tokens[t]) + " (emb.weight, blocks.0.ln0)");
  }
}

void Session::forward_layers(State& state, float* x, size_t T, int l_begin, int l_end, const int32_t* tokens) {
  scratch_.reserve(*model_, T);
  if (de_cache_ && tokens && l_begin < l_end) de_cache_->fetch(tokens, T);
  rwkvl::forward_layers(*this, state, x, T, l_begin, l_end, tokens);
}

void Session::eval_chunk(State& state, const int32_t* tokens, size_t T, float* logits_last, float* logits_all) {
  scratch_.reserve(*model_, T);
  const ModelConfig& cfg = model_->config();
  const size_t C = static_cast<size_t>(cfg.n_embd);
  x_.resize(T * C);
  float* x = x_.data();
  if (de_cache_) de_cache_->fetch(tokens, T);  // every layer's DeepEmbed rows of the chunk, as soon as it is known
  embed(tokens, T, x);
  rwkvl::forward_layers(*this, state, x, T, 0, cfg.n_layer, tokens);
  float* xn = scratch_.xn;
  if (logits_all) {
    ops::layer_norm_rows(x, xn, model_->ln_out_w(), model_->ln_out_b(), T, C, cfg.ln_eps);
    head_->logits(xn, T, logits_all);
    if (!all_finite(logits_all, T * static_cast<size_t>(cfg.n_vocab)))
      fail_nonfinite(*model_, "in the logits (ln_out, head)");
    if (logits_last) std::memcpy(logits_last, logits_all + (T - 1) * cfg.n_vocab, sizeof(float) * cfg.n_vocab);
  } else if (logits_last) {
    ops::layer_norm(x + (T - 1) * C, xn, model_->ln_out_w(), model_->ln_out_b(), C, cfg.ln_eps);
    head_->logits(xn, 1, logits_last);
    if (!all_finite(logits_last, static_cast<size_t>(cfg.n_vocab))) fail_nonfinite(*model_, "in the logits (ln_out, head)");
  }
}

}  // namespace rwkvl
