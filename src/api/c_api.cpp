// The C API over the C++ core: models, contexts, states, tokenizers, conversion and synthesis.
// (Sampling and measurement live in c_api_sampling.cpp / c_api_measure.cpp.)
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <memory>
#include <thread>

#include "api/api_internal.h"
#include "format/format.h"
#include "model/gguf_model.h"
#include "runtime/ffn_runtime.h"
#include "runtime/neuron_cache.h"
#include "core/file_writer.h"
#include "core/mapped_file.h"
#include "model/model.h"
#include "model/verify.h"
#include "core/sigbus_guard.h"
#include "core/hash.h"
#include "rwkv_lite.h"
#include "tokenizer/tokenizer.h"

using rwkvl::api::guarded;

std::shared_ptr<rwkvl::Model> rwkvl::api::model_of(const rwkvl_model* m) { return m ? m->m : nullptr; }


namespace {

void copy_str(char* dst, size_t cap, const std::string& s) {
  std::snprintf(dst, cap, "%s", s.c_str());
}

bool file_exists(const std::string& p) {
  struct stat st {};
  return stat(p.c_str(), &st) == 0 && S_ISREG(st.st_mode);
}

std::string dir_of(const std::string& p) {
  const size_t k = p.find_last_of('/');
  return k == std::string::npos ? std::string(".") : p.substr(0, k);
}

std::string exe_dir() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof buf - 1);
  if (n <= 0) return ".";
  buf[n] = 0;
  return dir_of(buf);
}

// Where tokenizer files are looked for, in order.
std::vector<std::string> tokenizer_dirs(const char* model_path) {
  std::vector<std::string> d;
  if (const char* e = std::getenv("RWKVL_TOKENIZER_DIR")) d.push_back(e);
  if (model_path) {
    d.push_back(dir_of(model_path));
    d.push_back(dir_of(model_path) + "/../tokenizers");
    d.push_back(dir_of(model_path) + "/../../tokenizers");
  }
  d.push_back("tokenizers");
  d.push_back(exe_dir() + "/../share/rwkv-lite");
#ifdef RWKVL_DEFAULT_TOKENIZER_DIR
  d.push_back(RWKVL_DEFAULT_TOKENIZER_DIR);
#endif
  return d;
}

constexpr char kStateMagic[8] = {'R', 'W', 'K', 'V', 'S', 'T', 'A', 'T'};
constexpr size_t kStateHeaderV2 = 64;

// The 64-byte version-2 state header of a model shape, checksum (bytes 56..63) left zero.
void state_header_v2(const rwkvl::ModelConfig& c, uint64_t n, uint8_t* out) {
  std::memset(out, 0, kStateHeaderV2);
  std::memcpy(out, kStateMagic, 8);
  const uint32_t f[10] = {2u,
                          static_cast<uint32_t>(c.arch_major),
                          static_cast<uint32_t>(c.arch_minor),
                          static_cast<uint32_t>(c.n_layer),
                          static_cast<uint32_t>(c.n_embd),
                          static_cast<uint32_t>(c.n_head),
                          static_cast<uint32_t>(c.head_size),
                          static_cast<uint32_t>(c.n_ffn),
                          static_cast<uint32_t>(c.n_vocab),
                          0u};
  std::memcpy(out + 8, f, sizeof f);
  std::memcpy(out + 48, &n, 8);
}

}  // namespace

namespace rwkvl::api {

void rebuild(rwkvl_context* ctx, const SessionParams& p, const SessionParams& fallback) {
  ctx->s.reset();  // its threads, caches and file handles go before the new ones come
  try {
    ctx->s = std::make_unique<Session>(ctx->m, p);
  } catch (...) {
    ctx->s = std::make_unique<Session>(ctx->m, fallback);
    throw;
  }
}

FfnOptions ffn_options(const rwkvl_ffn_params& p, const char* fn) {
  FfnOptions o;
  switch (enum_value(p.mode)) {
    case RWKVL_FFN_AUTO: o.mode = FfnMode::kAuto; break;
    case RWKVL_FFN_DENSE: o.mode = FfnMode::kDense; break;
    case RWKVL_FFN_EXACT: o.mode = FfnMode::kExact; break;
    case RWKVL_FFN_PREDICT: o.mode = FfnMode::kPredict; break;
    default: RWKVL_FAIL(kInvalidArgument, "%s: unknown mode %lld", fn, enum_value(p.mode));
  }
  o.cache_bytes = p.cache_bytes;
  o.prefetch = p.prefetch != 0;
  o.verify = p.verify != 0;
  o.random_frac = p.random_frac;
  o.seed = p.seed;
  return o;
}

SessionParams session_params(const rwkvl_session_params& p, const char* fn) {
  SessionParams sp;
  int n_threads = p.n_threads;
  if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
  RWKVL_API_REQUIRE(n_threads <= 1024, "%s: %d threads is too many", fn, n_threads);
  sp.threads = n_threads;
  sp.ffn = ffn_options(p.ffn, fn);
  sp.head = head_options(p.head, fn);
  memory_options(p.memory, fn, sp.storage, sp.memory);
  return sp;
}

}  // namespace rwkvl::api

extern "C" {

rwkvl_model_params rwkvl_model_default_params(void) {
  rwkvl_model_params p;
  p.weight_dtype = "keep";
  p.ln_x_eps_override = 0.f;
  return p;
}

rwkvl_status rwkvl_model_load(const char* path, const rwkvl_model_params* params, rwkvl_model** out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(path && out, "rwkvl_model_load: path and out must not be NULL");
    *out = nullptr;
    rwkvl::Model::LoadOptions o;
    if (params) {
      if (params->weight_dtype) o.weight_dtype = rwkvl::parse_weight_dtype_option(params->weight_dtype);
      o.ln_x_eps_override = params->ln_x_eps_override;
    }
    auto h = std::make_unique<rwkvl_model>();
    h->m = rwkvl::Model::load(path, o);
    *out = h.release();
  });
}

void rwkvl_model_free(rwkvl_model* model) { delete model; }

rwkvl_status rwkvl_model_release_pages(const rwkvl_model* model) {
  return guarded([&] {
    RWKVL_API_REQUIRE(model, "rwkvl_model_release_pages: NULL argument");
    if (const auto& f = model->m->file()) f->release_pages();
  });
}

rwkvl_status rwkvl_model_get_info(const rwkvl_model* model, rwkvl_model_info* info) {
  return guarded([&] {
    RWKVL_API_REQUIRE(model && info, "rwkvl_model_get_info: NULL argument");
    const rwkvl::Model& m = *model->m;
    const rwkvl::ModelConfig& c = m.config();
    std::memset(info, 0, sizeof *info);
    info->arch_major = c.arch_major;
    info->arch_minor = c.arch_minor;
    copy_str(info->arch_name, sizeof info->arch_name, c.arch_name());
    copy_str(info->file_kind, sizeof info->file_kind, rwkvl::file_kind_name(m.source_kind()));
    copy_str(info->weight_dtype, sizeof info->weight_dtype, m.weight_dtype_name());
    info->n_layer = c.n_layer;
    info->n_embd = c.n_embd;
    info->n_vocab = c.n_vocab;
    info->n_head = c.n_head;
    info->head_size = c.head_size;
    info->n_ffn = c.n_ffn;
    info->ln_x_eps = c.ln_x_eps;
    info->n_params = m.n_params();
    info->weight_bytes = m.weight_bytes();
    info->bytes_per_token = m.bytes_per_token();
    info->state_floats = m.state_floats();
    info->sparse_ffn = m.sparse_ffn() ? 1 : 0;
    info->ffn_predictor = m.has_ffn_predictor() ? 1 : 0;
    for (int l = 0; l < c.n_layer; ++l) {
      const rwkvl::LayerWeights& L = m.layer(l);
      info->ffn_weight_bytes += L.sffn.present() ? L.sffn.t.nbytes + L.sffn.scale.nbytes : L.ffn_k.bytes() + L.ffn_v.bytes();
      info->ffn_predictor_bytes += L.sffn.predictor_bytes();
    }
    const rwkvl::ClusterHead& H = m.cluster_head();
    info->cluster_head = static_cast<int>(H.k);
    info->cluster_largest = static_cast<int>(H.largest);
    info->head_bytes = m.head().bytes();
    info->cluster_head_bytes = H.bytes();
    info->emb_bytes = m.emb().bytes();
  });
}

rwkvl_status rwkvl_model_save(const rwkvl_model* model, const char* path, const char* dtype) {
  return guarded([&] {
    RWKVL_API_REQUIRE(model && path, "rwkvl_model_save: NULL argument");
    model->m->save_native(path, rwkvl::parse_weight_dtype_option(dtype ? dtype : "keep"));
  });
}

rwkvl_status rwkvl_model_save_gguf(const rwkvl_model* model, const rwkvl_tokenizer* tok, const char* path,
                                   rwkvl_dtype dtype) {
  return guarded([&] {
    RWKVL_API_REQUIRE(model && tok && path, "rwkvl_model_save_gguf: NULL argument");
    const long long d = rwkvl::api::enum_value(dtype);
    RWKVL_API_REQUIRE(d >= RWKVL_DTYPE_KEEP && d <= RWKVL_DTYPE_Q4,
                      "rwkvl_model_save_gguf: dtype must be keep, f32, f16, bf16, i8 (Q8_0) or q4 (Q4_1)");
    rwkvl::save_gguf(*model->m, *tok->tok, path, static_cast<rwkvl::WeightDType>(d));
  });
}

rwkvl_status rwkvl_model_save_rwkvcpp(const rwkvl_model* model, const char* path, rwkvl_dtype dtype) {
  return guarded([&] {
    RWKVL_API_REQUIRE(model && path, "rwkvl_model_save_rwkvcpp: NULL argument");
    const long long d = rwkvl::api::enum_value(dtype);
    RWKVL_API_REQUIRE(d == RWKVL_DTYPE_KEEP || d == RWKVL_DTYPE_F32 || d == RWKVL_DTYPE_F16,
                      "rwkvl_model_save_rwkvcpp: dtype must be keep, f32 or f16 (quantise the written file with rwkv.cpp)");
    bool f16 = d == RWKVL_DTYPE_F16;
    if (d == RWKVL_DTYPE_KEEP)
      for (const auto& [name, t] : model->m->tensors())
        f16 |= t.shape.size() == 2 && t.dtype != rwkvl::DType::kF32;
    const rwkvl::ModelConfig& c = model->m->config();
    rwkvl::write_rwkvcpp(path, rwkvl::export_rwkvcpp(*model->m, f16), c.n_vocab, c.n_embd, c.n_layer);
  });
}

rwkvl_status rwkvl_synth(const rwkvl_synth_params* params, const char* path) {
  return rwkvl_synth_with(params, nullptr, path);
}

rwkvl_synth_extras rwkvl_synth_default_extras(void) {
  rwkvl_synth_extras x{};
  x.struct_size = sizeof(rwkvl_synth_extras);
  return x;
}

rwkvl_status rwkvl_synth_with(const rwkvl_synth_params* params, const rwkvl_synth_extras* extras, const char* path) {
  return guarded([&] {
    RWKVL_API_REQUIRE(params && path, "rwkvl_synth: NULL argument");
    rwkvl_synth_extras x = rwkvl_synth_default_extras();
    rwkvl::api::read_extras(extras, x, "rwkvl_synth_with", "rwkvl_synth_default_extras");
    RWKVL_API_REQUIRE(x.de_rank >= 0 && x.de_rank <= 256, "DeepEmbed rank %d: it must be 0..256", x.de_rank);
    rwkvl::ModelConfig c;
    c.arch_major = params->arch_major;
    c.n_layer = params->n_layer;
    c.n_embd = params->n_embd;
    c.n_vocab = params->n_vocab;
    c.n_ffn = params->n_ffn;
    c.head_size = params->head_size;
    c.de_rank = x.de_rank;
    auto m = rwkvl::synth_model(c, params->dtype ? params->dtype : "f32", params->seed);
    m->save_native(path, rwkvl::WeightDType::kKeep);
  });
}

// ---------------------------------------------------------------- contexts, states, eval


rwkvl_session_params rwkvl_session_default_params(void) {
  rwkvl_session_params p{};
  p.n_threads = 0;
  p.ffn = rwkvl_ffn_default_params();
  p.head = rwkvl_head_default_params();
  p.memory = rwkvl_memory_default_params();
  return p;
}

rwkvl_status rwkvl_session_new(const rwkvl_model* model, const rwkvl_session_params* params, rwkvl_session** out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(model && params && out, "rwkvl_session_new: NULL argument");
    *out = nullptr;
    const rwkvl::SessionParams sp = rwkvl::api::session_params(*params, "rwkvl_session_new");
    auto h = std::make_unique<rwkvl_context>();
    h->m = model->m;
    h->s = std::make_unique<rwkvl::Session>(model->m, sp);
    *out = h.release();
  });
}

void rwkvl_session_free(rwkvl_session* s) { delete s; }

rwkvl_status rwkvl_context_configure(rwkvl_context* ctx, const rwkvl_session_params* params) {
  return guarded([&] {
    RWKVL_API_REQUIRE(ctx && params, "rwkvl_context_configure: NULL argument");
    const rwkvl::SessionParams sp = rwkvl::api::session_params(*params, "rwkvl_context_configure");
    rwkvl::SessionParams fallback;
    fallback.threads = sp.threads;
    rwkvl::api::rebuild(ctx, sp, fallback);
  });
}

rwkvl_status rwkvl_context_new(const rwkvl_model* model, int n_threads, rwkvl_context** out) {
  rwkvl_session_params p = rwkvl_session_default_params();
  p.n_threads = n_threads;
  return rwkvl_session_new(model, &p, out);
}

void rwkvl_context_free(rwkvl_context* ctx) { delete ctx; }
int rwkvl_context_threads(const rwkvl_context* ctx) { return ctx ? ctx->s->params().threads : 0; }

rwkvl_ffn_params rwkvl_ffn_default_params(void) {
  rwkvl_ffn_params p{};
  p.mode = RWKVL_FFN_AUTO;
  p.prefetch = 0;
  p.seed = 1;
  return p;
}

rwkvl_status rwkvl_context_set_ffn(rwkvl_context* ctx, const rwkvl_ffn_params* params) {
  return guarded([&] {
    RWKVL_API_REQUIRE(ctx && params, "rwkvl_context_set_ffn: NULL argument");
    rwkvl::SessionParams p = ctx->s->params(), fallback = ctx->s->params();
    p.ffn = rwkvl::api::ffn_options(*params, "rwkvl_context_set_ffn");
    fallback.ffn = rwkvl::FfnOptions{};
    rwkvl::api::rebuild(ctx, p, fallback);
  });
}

rwkvl_status rwkvl_context_ffn_stats(rwkvl_context* ctx, rwkvl_ffn_stats* out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(ctx && out, "rwkvl_context_ffn_stats: NULL argument");
    const rwkvl::FfnRuntime& f = ctx->s->ffn();
    const rwkvl::FfnStats& s = f.stats();
    *out = rwkvl_ffn_stats{};
    out->evals = s.evals;
    out->neurons = s.neurons;
    out->computed = s.computed;
    out->value_rows = s.value_rows;
    out->weight_bytes = s.weight_bytes;
    out->predictor_bytes = s.predictor_bytes;
    out->verify_active = s.verify_active;
    out->verify_hit = s.verify_hit;
    out->verified = s.verified ? 1 : 0;
    out->seconds = s.seconds;
    out->seconds_predictor = s.seconds_predictor;
    if (const rwkvl::NeuronCache* c = f.cache()) {
      const rwkvl::NeuronCache::Stats cs = c->stats();
      out->cache_requests = cs.requests;
      out->cache_hits = cs.hits_pinned + cs.hits_cached + cs.hits_prefetched;
      out->cache_misses = cs.misses;
      out->cache_bytes_read = cs.bytes_read;
      out->cache_capacity = cs.capacity_bytes;
      out->cache_pinned_bytes = cs.pinned_bytes;
      out->cache_wait_seconds = cs.wait_seconds;
    }
    switch (f.mode()) {
      case rwkvl::FfnMode::kDense: out->mode = RWKVL_FFN_DENSE; break;
      case rwkvl::FfnMode::kExact: out->mode = RWKVL_FFN_EXACT; break;
      default: out->mode = RWKVL_FFN_PREDICT; break;
    }
  });
}

rwkvl_status rwkvl_context_reset_ffn_stats(rwkvl_context* ctx) {
  return guarded([&] {
    RWKVL_API_REQUIRE(ctx, "rwkvl_context_reset_ffn_stats: NULL argument");
    ctx->s->ffn().reset_stats();
  });
}

rwkvl_status rwkvl_state_new(const rwkvl_model* model, rwkvl_state** out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(model && out, "rwkvl_state_new: NULL argument");
    auto h = std::make_unique<rwkvl_state>();
    h->cfg = model->m->config();
    h->st.reset(h->cfg);
    *out = h.release();
  });
}

void rwkvl_state_free(rwkvl_state* state) { delete state; }

rwkvl_status rwkvl_state_reset(rwkvl_state* state) {
  return guarded([&] {
    RWKVL_API_REQUIRE(state, "rwkvl_state_reset: NULL state");
    state->st.reset(state->cfg);
  });
}

rwkvl_status rwkvl_state_copy(rwkvl_state* dst, const rwkvl_state* src) {
  return guarded([&] {
    RWKVL_API_REQUIRE(dst && src, "rwkvl_state_copy: NULL argument");
    RWKVL_API_REQUIRE(dst->st.data.size() == src->st.data.size() && dst->cfg.arch_major == src->cfg.arch_major,
                      "rwkvl_state_copy: states belong to models of different shapes");
    dst->st.data = src->st.data;
  });
}

float* rwkvl_state_data(rwkvl_state* state) { return state ? state->st.data.data() : nullptr; }

rwkvl_status rwkvl_state_save(const rwkvl_state* state, const char* path) {
  return guarded([&] {
    RWKVL_API_REQUIRE(state && path, "rwkvl_state_save: NULL argument");
    const rwkvl::ModelConfig& c = state->cfg;
    rwkvl::FileWriter w(path);
    // Version 2 (docs/FORMAT.md, "State files"): 64-byte header with the model's shape and an FNV-1a
    // checksum of the header and the values.
    uint8_t hdr[kStateHeaderV2];
    const uint64_t n = state->st.data.size();
    state_header_v2(c, n, hdr);
    const uint64_t sum = rwkvl::fnv1a64(state->st.data.data(), n * sizeof(float), rwkvl::fnv1a64(hdr, 56));
    std::memcpy(hdr + 56, &sum, 8);
    w.write(hdr, sizeof hdr);
    w.write(state->st.data.data(), n * sizeof(float));
    w.commit();
  });
}

rwkvl_status rwkvl_state_load(rwkvl_state* state, const char* path) {
  return guarded([&] {
    RWKVL_API_REQUIRE(state && path, "rwkvl_state_load: NULL argument");
    auto f = rwkvl::MappedFile::open(path);
    const rwkvl::ModelConfig& c = state->cfg;
    const uint8_t* p = f->data();
    if (f->size() < 12 || std::memcmp(p, kStateMagic, 8) != 0) RWKVL_FAIL(kFormat, "%s: not an rwkv-lite state file", path);
    uint32_t version;
    std::memcpy(&version, p + 8, 4);
    const uint64_t want = state->st.data.size();
    uint64_t n = 0;
    size_t data_at = 0;
    if (version == 2) {
      if (f->size() < kStateHeaderV2) RWKVL_FAIL(kFormat, "%s: truncated state file (%zu bytes)", path, f->size());
      uint8_t expect[kStateHeaderV2];
      state_header_v2(c, want, expect);
      uint32_t saved[9];
      std::memcpy(saved, p + 12, sizeof saved);
      std::memcpy(&n, p + 48, 8);
      if (std::memcmp(p + 12, expect + 12, 36) != 0 || n != want)
        RWKVL_FAIL(kInvalidArgument,
                   "%s: state was saved for a different model (v%u.%u, %u layers, width %u, %u x %u heads, ffn %u, vocab %u; "
                   "this model: %s, %d layers, width %d, %d x %d heads, ffn %d, vocab %d)",
                   path, saved[0], saved[1], saved[2], saved[3], saved[4], saved[5], saved[6], saved[7],
                   c.arch_name().c_str(), c.n_layer, c.n_embd, c.n_head, c.head_size, c.n_ffn, c.n_vocab);
      data_at = kStateHeaderV2;
    } else if (version == 1) {
      // Version 1 (no checksum, no arch_minor/ffn/vocab): accepted when the shape matches and every value is
      // finite, so states saved by older builds keep working.
      if (f->size() < 44) RWKVL_FAIL(kFormat, "%s: truncated state file (%zu bytes)", path, f->size());
      uint32_t hdr[7];
      std::memcpy(hdr, p + 8, sizeof hdr);
      std::memcpy(&n, p + 36, 8);
      if (hdr[1] != static_cast<uint32_t>(c.arch_major) || hdr[2] != static_cast<uint32_t>(c.n_layer) ||
          hdr[3] != static_cast<uint32_t>(c.n_embd) || hdr[4] != static_cast<uint32_t>(c.n_head) ||
          hdr[5] != static_cast<uint32_t>(c.head_size) || n != want)
        RWKVL_FAIL(kInvalidArgument, "%s: state was saved for a different model (v%u, %u layers, width %u)", path, hdr[1],
                   hdr[2], hdr[3]);
      data_at = 44;
    } else {
      RWKVL_FAIL(kUnsupported, "%s: state file version %u is not supported (this build reads 1 and 2)", path, version);
    }
    if (f->size() != data_at + want * sizeof(float))
      RWKVL_FAIL(kFormat, "%s: state file has %zu bytes, %llu expected (truncated or padded?)", path, f->size(),
                 static_cast<unsigned long long>(data_at + want * sizeof(float)));
    if (version == 2) {
      uint64_t stored;
      std::memcpy(&stored, p + 56, 8);
      if (rwkvl::fnv1a64(p + data_at, want * sizeof(float), rwkvl::fnv1a64(p, 56)) != stored)
        RWKVL_FAIL(kFormat, "%s: state file is corrupt (FNV-1a checksum mismatch)", path);
    }
    for (size_t i = 0; i < want; ++i) {
      float x;
      std::memcpy(&x, p + data_at + 4 * i, 4);
      if (!std::isfinite(x)) RWKVL_FAIL(kFormat, "%s: state file holds a non-finite value at index %zu (corrupt)", path, i);
    }
    // Into the existing buffer: rwkvl_state_data() pointers stay valid.
    std::memcpy(state->st.data.data(), p + data_at, want * sizeof(float));
  });
}

static rwkvl_status eval_impl(rwkvl_context* ctx, rwkvl_state* state, const int32_t* tokens, size_t n, size_t chunk,
                              float* logits, float* logits_all) {
  return guarded([&] {
    RWKVL_API_REQUIRE(ctx && state && (tokens || n == 0), "rwkvl_eval: NULL argument");
    if (n == 0) return;
    ctx->s->eval(state->st, tokens, n, chunk, logits, logits_all);
  });
}

rwkvl_status rwkvl_eval(rwkvl_context* ctx, rwkvl_state* state, const int32_t* tokens, size_t n, size_t chunk,
                        float* logits) {
  return eval_impl(ctx, state, tokens, n, chunk, logits, nullptr);
}

rwkvl_status rwkvl_eval_all_logits(rwkvl_context* ctx, rwkvl_state* state, const int32_t* tokens, size_t n,
                                   size_t chunk, float* logits_all) {
  if (!logits_all) {
    rwkvl::api::set_last_error("rwkvl_eval_all_logits: logits_all must not be NULL");
    return RWKVL_ERR_INVALID_ARGUMENT;
  }
  return eval_impl(ctx, state, tokens, n, chunk, nullptr, logits_all);
}

// ---------------------------------------------------------------- tokenizers

rwkvl_status rwkvl_tokenizer_load(const char* kind, const char* path, rwkvl_tokenizer** out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(kind && out, "rwkvl_tokenizer_load: NULL argument");
    *out = nullptr;
    const std::string k = kind;
    auto h = std::make_unique<rwkvl_tokenizer>();
    if (k == "byte") {
      h->tok = rwkvl::Tokenizer::byte_level();
    } else if (k == "world" || k == "neox") {
      RWKVL_API_REQUIRE(path, "rwkvl_tokenizer_load: the %s tokenizer needs a file path", kind);
      h->tok = k == "world" ? rwkvl::Tokenizer::world_from_file(path) : rwkvl::Tokenizer::neox_from_file(path);
    } else {
      RWKVL_FAIL(kInvalidArgument, "unknown tokenizer kind '%s' (byte, world or neox)", kind);
    }
    h->name = h->tok->name();
    *out = h.release();
  });
}

rwkvl_status rwkvl_tokenizer_for_model(const rwkvl_model* model, const char* model_path, const char* path,
                                       rwkvl_tokenizer** out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(model && out, "rwkvl_tokenizer_for_model: NULL argument");
    *out = nullptr;
    const int V = model->m->config().n_vocab;
    if (path && !*path) path = nullptr;
    std::string kind, file;
    if (V == 256) {
      kind = "byte";
      if (path)
        RWKVL_FAIL(kInvalidArgument,
                   "the model has a byte-level vocabulary (256 tokens) and uses no tokenizer file; '%s' would be ignored "
                   "(drop --tokenizer)",
                   path);
    } else if (V == 65536 && !path && !model->m->embedded_vocab().empty()) {
      // A GGUF file carries its World vocabulary.
      auto h = std::make_unique<rwkvl_tokenizer>();
      h->tok = rwkvl::Tokenizer::world_from_tokens(model->m->embedded_vocab(), model->m->path() + " (tokenizer.ggml.tokens)");
      h->name = "world";
      *out = h.release();
      return;
    } else if (V == 65536) {
      kind = "world";
      file = "rwkv_vocab_v20230424.txt";
    } else if (V == 50277 || V == 50304) {
      kind = "neox";
      file = "20B_tokenizer.json";
    } else if (!path) {
      RWKVL_FAIL(kUnsupported, "no built-in tokenizer for a vocabulary of %d tokens (pass a tokenizer file)", V);
    }
    std::string found = path ? std::string(path) : std::string();
    if (found.empty() && !file.empty()) {
      std::string tried;
      for (const std::string& d : tokenizer_dirs(model_path)) {
        const std::string cand = d + "/" + file;
        if (file_exists(cand)) {
          found = cand;
          break;
        }
        tried += "\n  " + cand;
      }
      if (found.empty())
        RWKVL_FAIL(kIo, "the model has %d tokens, so it needs the %s tokenizer file '%s'; not found in:%s\n(set RWKVL_TOKENIZER_DIR or pass --tokenizer PATH)",
                   V, kind.c_str(), file.c_str(), tried.c_str());
    }
    if (kind.empty()) {  // explicit file for an unusual vocabulary: guess by content
      kind = found.size() > 5 && found.compare(found.size() - 5, 5, ".json") == 0 ? "neox" : "world";
    }
    auto h = std::make_unique<rwkvl_tokenizer>();
    if (kind == "byte") h->tok = rwkvl::Tokenizer::byte_level();
    else if (kind == "world") h->tok = rwkvl::Tokenizer::world_from_file(found);
    else h->tok = rwkvl::Tokenizer::neox_from_file(found);
    if (h->tok->vocab_size() > V)
      RWKVL_FAIL(kInvalidArgument, "tokenizer '%s' has %d tokens but the model only %d", found.c_str(), h->tok->vocab_size(), V);
    if (kind == "world" && V == 65536) {
      // The World vocabulary of 65536-token models is rwkv_vocab_v20230424.txt: ids 1..65529, each once (the
      // reader refuses duplicates and ids outside 1..65535). A file cut short, or another vocabulary, would load
      // and tokenise wrongly without a word.
      constexpr int kWorldEntries = 65529;
      int count = 0, top = 0;
      for (int32_t id = 1; id < V; ++id)
        if (!h->tok->token_bytes(id).empty()) {
          ++count;
          top = id;
        }
      if (count != kWorldEntries || top != kWorldEntries)
        RWKVL_FAIL(kFormat,
                   "%s: World vocabulary has %d entries (highest id %d); a 65536-token model needs the complete "
                   "rwkv_vocab_v20230424.txt with %d (ids 1..%d): the file is truncated or a different vocabulary",
                   found.c_str(), count, top, kWorldEntries, kWorldEntries);
    }
    h->name = h->tok->name();
    *out = h.release();
  });
}

void rwkvl_tokenizer_free(rwkvl_tokenizer* tok) { delete tok; }
const char* rwkvl_tokenizer_name(const rwkvl_tokenizer* tok) { return tok ? tok->name.c_str() : ""; }

rwkvl_status rwkvl_tokenize(const rwkvl_tokenizer* tok, const char* text, size_t len, int32_t* out, size_t cap,
                            size_t* n_out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(tok && (text || len == 0) && n_out, "rwkvl_tokenize: NULL argument");
    std::vector<int32_t> ids = tok->tok->encode(std::string_view(text ? text : "", len));
    *n_out = ids.size();
    RWKVL_API_REQUIRE(ids.size() <= cap, "rwkvl_tokenize: %zu tokens do not fit in a buffer of %zu", ids.size(), cap);
    if (!ids.empty()) std::memcpy(out, ids.data(), ids.size() * sizeof(int32_t));
  });
}

rwkvl_status rwkvl_token_bytes(const rwkvl_tokenizer* tok, int32_t id, char* out, size_t cap, size_t* n_out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(tok && n_out, "rwkvl_token_bytes: NULL argument");
    const std::string b = tok->tok->token_bytes(id);
    *n_out = b.size();
    RWKVL_API_REQUIRE(b.size() <= cap, "rwkvl_token_bytes: %zu bytes do not fit in a buffer of %zu", b.size(), cap);
    if (!b.empty()) std::memcpy(out, b.data(), b.size());
  });
}

// ---------------------------------------------------------------- output files (core/file_writer.h)

rwkvl_status rwkvl_check_output_path(const char* path) {
  return guarded([&] {
    RWKVL_API_REQUIRE(path, "rwkvl_check_output_path: NULL path");
    rwkvl::check_output_path(path);
  });
}

rwkvl_status rwkvl_write_file(const char* path, const void* data, size_t size) {
  return guarded([&] {
    RWKVL_API_REQUIRE(path && (data || size == 0), "rwkvl_write_file: NULL argument");
    rwkvl::write_file_atomic(path, data, size);
  });
}

}  // extern "C"

// ---------------------------------------------------------------- integrity (verify, SIGBUS guard)

namespace {
// A report that did not fit the caller's buffer, kept for the caller's next call with the same path.
thread_local std::string g_verify_path, g_verify_report;
thread_local bool g_verify_ok = false;
}  // namespace

extern "C" {

rwkvl_status rwkvl_verify_model(const char* path, char* out, size_t cap, size_t* n_out, int* ok) {
  return guarded([&] {
    RWKVL_API_REQUIRE(path && n_out && (out || cap == 0), "rwkvl_verify_model: NULL argument");
    std::string text;
    bool good = false;
    if (!g_verify_report.empty() && g_verify_path == path) {
      text.swap(g_verify_report);
      good = g_verify_ok;
    } else {
      const nlohmann::json rep = rwkvl::verify_model(path);
      text = rep.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      good = rep.value("ok", false);
    }
    g_verify_report.clear();
    g_verify_path.clear();
    *n_out = text.size();
    if (ok) *ok = good ? 1 : 0;
    if (text.size() >= cap) {
      g_verify_path = path;
      g_verify_report = std::move(text);
      g_verify_ok = good;
      RWKVL_FAIL(kInvalidArgument, "rwkvl_verify_model: %zu bytes needed, buffer has %zu", *n_out + 1, cap);
    }
    std::memcpy(out, text.c_str(), text.size() + 1);
  });
}

void rwkvl_install_sigbus_guard(const char* program) { rwkvl::sigbus_guard::install(program ? program : "rwkv-lite"); }

}  // extern "C"
