// C API: evaluation as library calls (perplexity, bits per byte, LAMBADA) over src/eval/. The one place that
// connects src/eval to the runtime (a Session) is ContextScorer below.
#include <algorithm>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "api/api_internal.h"
#include "eval/lambada.h"
#include "eval/text_eval.h"
#include "model/model.h"

using rwkvl::api::guarded;

struct rwkvl_text_tokens {
  std::unique_ptr<rwkvl::eval::TextTokens> text;
  bool done = false;
};

struct rwkvl_lambada {
  std::unique_ptr<rwkvl::eval::Passages> passages;
  bool done = false;
};

namespace {

// src/eval's view of a session: the session and a state of its own.
class ContextScorer final : public rwkvl::eval::Scorer {
 public:
  explicit ContextScorer(rwkvl_context* h) : ctx_(*h->s) { reset(); }
  void reset() override { state_.reset(ctx_.model().config()); }
  void feed(const int32_t* tokens, size_t n, size_t chunk, float* logits_all) override {
    if (n) ctx_.eval(state_, tokens, n, chunk, nullptr, logits_all);
  }

 private:
  rwkvl::Session& ctx_;
  rwkvl::State state_;
};

// A failed C API call inside a guarded block: its status and message, rethrown.
void check(rwkvl_status st) {
  if (st != RWKVL_OK) throw rwkvl::Error(static_cast<rwkvl::ErrorCode>(st), rwkvl_last_error());
}

rwkvl::eval::EvalOptions options(const rwkvl_context* ctx, const rwkvl_eval_params* params, const char* what) {
  const rwkvl_eval_params p = params ? *params : rwkvl_eval_default_params();
  rwkvl::eval::EvalOptions o;
  o.n_vocab = static_cast<size_t>(ctx->s->model().config().n_vocab);
  o.chunk = p.chunk;
  const bool budget = ctx->s->params().memory.budget > 0;
  o.block = p.block ? p.block : rwkvl::eval::block_tokens(p.chunk, budget);
  o.threads = ctx->s->params().threads;
  if (p.progress) {
    o.progress = [fn = p.progress, user = p.progress_user, what](uint64_t done, uint64_t total, const char* unit) {
      fn(user, what, done, total, unit);
    };
  }
  return o;
}

// A session like ctx (its model and parameters) with n_threads threads.
std::unique_ptr<rwkvl_context> sibling(const rwkvl_context* ctx, int n_threads) {
  auto h = std::make_unique<rwkvl_context>();
  h->m = ctx->m;
  rwkvl::SessionParams p = ctx->s->params();
  p.threads = n_threads;
  h->s = std::make_unique<rwkvl::Session>(h->m, p);
  return h;
}

}  // namespace

extern "C" {

rwkvl_eval_params rwkvl_eval_default_params(void) {
  rwkvl_eval_params p{};
  p.chunk = 0;
  p.block = 0;
  p.progress = nullptr;
  p.progress_user = nullptr;
  return p;
}

size_t rwkvl_eval_block(size_t chunk, int under_budget) { return rwkvl::eval::block_tokens(chunk, under_budget != 0); }

uint64_t rwkvl_eval_reserve_bytes(int n_vocab, size_t block, int text_streamed, int lambada_streamed) {
  return rwkvl::eval::reserve_bytes(static_cast<size_t>(std::max(0, n_vocab)), block, text_streamed != 0,
                                    lambada_streamed != 0);
}

rwkvl_status rwkvl_text_tokens_open(const rwkvl_tokenizer* tok, const char* path, int64_t max_tokens,
                                    rwkvl_text_tokens** out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(tok && path && out, "rwkvl_text_tokens_open: NULL argument");
    *out = nullptr;
    RWKVL_API_REQUIRE(max_tokens >= 0, "rwkvl_text_tokens_open: max_tokens %lld must be >= 0",
                      static_cast<long long>(max_tokens));
    auto h = std::make_unique<rwkvl_text_tokens>();
    h->text = std::make_unique<rwkvl::eval::TextTokens>(*tok->tok, path, max_tokens);
    *out = h.release();
  });
}

int rwkvl_text_tokens_streaming(const rwkvl_text_tokens* text) {
  return text && !text->done && text->text->streaming() ? 1 : 0;
}

void rwkvl_text_tokens_free(rwkvl_text_tokens* text) { delete text; }

rwkvl_status rwkvl_eval_text(rwkvl_context* ctx, rwkvl_text_tokens* text, const rwkvl_eval_params* params,
                             rwkvl_text_result* out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(ctx && text && out, "rwkvl_eval_text: NULL argument");
    RWKVL_API_REQUIRE(!text->done, "rwkvl_eval_text: the text was already evaluated (open it again)");
    const rwkvl::eval::EvalOptions o = options(ctx, params, "perplexity");
    ContextScorer scorer(ctx);
    text->done = true;
    const rwkvl::eval::TextResult r = rwkvl::eval::eval_text(scorer, *text->text, o);
    rwkvl_text_result res{};
    res.tokens = r.tokens;
    res.predicted = r.predicted;
    res.predicted_bytes = r.bytes;
    res.total_nll = r.total_nll;
    res.mean_nll = r.mean_nll();
    res.ppl = r.ppl();
    res.bpb = r.bpb();
    res.seconds = r.seconds;
    res.tok_per_s = r.tok_per_s();
    res.threads = ctx->s->params().threads;
    *out = res;
  });
}

rwkvl_status rwkvl_lambada_open(const char* path, int64_t max_passages, rwkvl_lambada** out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(path && out, "rwkvl_lambada_open: NULL argument");
    *out = nullptr;
    RWKVL_API_REQUIRE(max_passages >= 0, "rwkvl_lambada_open: max_passages %lld must be >= 0",
                      static_cast<long long>(max_passages));
    auto h = std::make_unique<rwkvl_lambada>();
    h->passages = std::make_unique<rwkvl::eval::Passages>(path, max_passages);
    *out = h.release();
  });
}

size_t rwkvl_lambada_count(const rwkvl_lambada* lambada) { return lambada ? lambada->passages->size() : 0; }

rwkvl_status rwkvl_lambada_tokenize(rwkvl_lambada* lambada, const rwkvl_tokenizer* tok) {
  return guarded([&] {
    RWKVL_API_REQUIRE(lambada && tok, "rwkvl_lambada_tokenize: NULL argument");
    RWKVL_API_REQUIRE(!lambada->passages->tokenized(), "rwkvl_lambada_tokenize: the passages are already tokenized");
    lambada->passages->tokenize(*tok->tok);
  });
}

int rwkvl_lambada_streaming(const rwkvl_lambada* lambada) {
  return lambada && !lambada->done && lambada->passages->streaming() ? 1 : 0;
}

void rwkvl_lambada_free(rwkvl_lambada* lambada) { delete lambada; }

rwkvl_status rwkvl_eval_lambada(rwkvl_context* ctx, rwkvl_lambada* lambada, const rwkvl_eval_params* params,
                                rwkvl_output* details, rwkvl_lambada_result* out) {
  return guarded([&] {
    RWKVL_API_REQUIRE(ctx && lambada && out, "rwkvl_eval_lambada: NULL argument");
    RWKVL_API_REQUIRE(lambada->passages->tokenized(), "rwkvl_eval_lambada: the passages are not tokenized (rwkvl_lambada_tokenize)");
    RWKVL_API_REQUIRE(!lambada->done, "rwkvl_eval_lambada: the passages were already evaluated (open them again)");
    const rwkvl::eval::EvalOptions o = options(ctx, params, "lambada");
    const bool budget = ctx->s->params().memory.budget > 0;
    const size_t n_workers = rwkvl::eval::lambada_workers(ctx->s->params().threads, lambada->passages->size(), budget);
    // One worker: ctx itself. Several: single-threaded (or n / workers threads) contexts like ctx.
    std::vector<std::unique_ptr<rwkvl_context>> contexts;
    std::vector<std::unique_ptr<ContextScorer>> scorers;
    std::vector<rwkvl::eval::Scorer*> view;
    const int threads_each = std::max(1, ctx->s->params().threads / static_cast<int>(n_workers));
    for (size_t w = 0; w < n_workers; ++w) {
      if (n_workers > 1) contexts.push_back(sibling(ctx, threads_each));
      scorers.push_back(std::make_unique<ContextScorer>(n_workers > 1 ? contexts.back().get() : ctx));
      view.push_back(scorers.back().get());
    }
    rwkvl::eval::PassageFn on_passage;
    if (details) {
      on_passage = [details](const rwkvl::eval::PassageResult& p) {
        const std::string line = rwkvl::eval::passage_json(p).dump() + '\n';
        check(rwkvl_output_write(details, line.data(), line.size()));
      };
    }
    lambada->done = true;
    const rwkvl::eval::LambadaResult r = rwkvl::eval::eval_lambada(view, *lambada->passages, o, on_passage);
    rwkvl_lambada_result res{};
    res.n = r.n;
    res.correct = r.correct;
    res.target_tokens = r.target_tokens;
    res.fallbacks = r.fallbacks;
    res.total_nll = r.total_nll;
    res.acc = r.acc();
    res.ppl = r.ppl();
    res.token_ppl = r.token_ppl();
    res.seconds = r.seconds;
    res.workers = static_cast<int>(n_workers);
    for (const auto& c : contexts) {
      rwkvl_ffn_stats fs{};
      rwkvl_head_stats hs{};
      rwkvl_memory_stats ms{};
      check(rwkvl_context_ffn_stats(c.get(), &fs));
      check(rwkvl_context_head_stats(c.get(), &hs));
      check(rwkvl_context_memory_stats(c.get(), &ms));
      rwkvl_ffn_stats_add(&res.worker_ffn, &fs);
      rwkvl_head_stats_add(&res.worker_head, &hs);
      rwkvl_memory_stats_add(&res.worker_memory, &ms);
    }
    *out = res;
  });
}

}  // extern "C"
