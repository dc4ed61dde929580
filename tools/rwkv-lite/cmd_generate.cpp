// rwkv-lite generate: prompt in sequence mode, then sampling one token at a time, streamed to stdout.
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "args.h"
#include "commands.h"
#include "common.h"

namespace rwkvl::cli {

namespace {

// Tokens of a prompt file fed at a time.
constexpr size_t kPromptPiece = 4096;

uint64_t clock_seed() {
  const auto ns = std::chrono::system_clock::now().time_since_epoch().count();
  return (static_cast<uint64_t>(ns) ^ (static_cast<uint64_t>(getpid()) << 32)) & 0x7fffffffffffffffull;
}

void write_out(const std::string& s) {
  if (s.empty()) return;
  if (std::fwrite(s.data(), 1, s.size(), stdout) != s.size()) throw Failure("cannot write to stdout");
  std::fflush(stdout);
}

}  // namespace

int cmd_generate(const Args& args) {
  const std::string model_path = require(args, "model");
  if (args.given("state-out")) check(rwkvl_check_output_path(args.str("state-out").c_str()), "--state-out");
  if (args.given("prompt") && args.given("file")) args.fail("give the prompt with -p or -f, not both");
  if (!args.given("prompt") && !args.given("file")) args.fail("missing the prompt: -p TEXT or -f FILE");
  // -p TEXT is tokenized whole; -f FILE ("-" = standard input) is read and fed in pieces, so a prompt file of any
  // size runs in bounded memory (and within --mem-budget).
  const std::string prompt = args.given("prompt") ? args.str("prompt") : "";
  if (args.given("prompt") && prompt.empty()) args.fail("the prompt is empty (the model needs at least one token to start from)");
  if (args.given("file")) { const InputPtr check_prompt = open_input(args.str("file"), "prompt file", true); }

  const int64_t n_predict = args.integer("n-predict");
  const size_t chunk = static_cast<size_t>(args.integer("chunk"));
  rwkvl_sampler_params sp = rwkvl_sampler_default_params();
  sp.temperature = static_cast<float>(args.number("temp"));
  sp.top_k = static_cast<int>(args.integer("top-k"));
  sp.top_p = static_cast<float>(args.number("top-p"));
  sp.presence_penalty = static_cast<float>(args.number("presence-penalty"));
  sp.frequency_penalty = static_cast<float>(args.number("frequency-penalty"));
  sp.penalty_decay = static_cast<float>(args.number("penalty-decay"));
  const int64_t seed_arg = args.integer("seed");
  sp.seed = seed_arg < 0 ? clock_seed() : static_cast<uint64_t>(seed_arg);
  rwkvl_sampler* raw_sampler = nullptr;
  check(rwkvl_sampler_new(&sp, &raw_sampler));
  const SamplerPtr sampler(raw_sampler);

  const ModelPtr model = load_model(args);
  const rwkvl_model_info info = model_info(model.get());
  const TokenizerPtr tok = model_tokenizer(model.get(), model_path, args.str("tokenizer"));
  const std::string tok_name = rwkvl_tokenizer_name(tok.get());
  const bool stop_at_eos = args.on("stop-at-eos") && tok_name != "byte";

  // The prompt's tokens: all of -p, or the first piece of -f (the rest is read while the model runs).
  std::unique_ptr<TextStream> prompt_stream;
  std::vector<int32_t> ids;
  if (args.given("file")) {
    prompt_stream = std::make_unique<TextStream>(tok.get(), args.str("file"), "prompt file");
    ids.resize(kPromptPiece);
    ids.resize(prompt_stream->read(ids.data(), ids.size()));
    if (ids.empty() && prompt_stream->bytes_read() == 0)
      args.fail("the prompt file is empty (the model needs at least one token to start from)");
  } else {
    ids = tokenize(tok.get(), prompt);
  }
  if (ids.empty()) args.fail("the prompt is empty after tokenization");

  const ContextPtr ctx = new_context(model.get(), static_cast<int>(args.integer("threads")));
  Settings set = settings(args, model.get());
  // After planning the command still holds the prompt pieces and the text stream's buffers.
  if (prompt_stream) set.mem.reserve_bytes += RWKVL_TEXT_STREAM_MAX_BYTES + 2 * kPromptPiece * sizeof(int32_t);
  apply(set, ctx.get());
  print_plan(args, ctx.get());
  const StatePtr state = new_state(model.get());
  if (args.given("state-in")) check(rwkvl_state_load(state.get(), args.str("state-in").c_str()), "--state-in");

  const size_t n_vocab = static_cast<size_t>(info.n_vocab);
  std::vector<float> logits(n_vocab);
  const double t0 = now_seconds();
  size_t n_prompt = ids.size();
  if (prompt_stream) {
    // Feed one piece while the next is read; only the last piece's logits are needed.
    std::vector<int32_t> next(kPromptPiece);
    for (;;) {
      const size_t got = prompt_stream->read(next.data(), next.size());
      check(rwkvl_eval(ctx.get(), state.get(), ids.data(), ids.size(), chunk, got ? nullptr : logits.data()));
      if (got == 0) break;
      n_prompt += got;
      next.resize(got);
      ids.swap(next);
      next.resize(kPromptPiece);
    }
    prompt_stream.reset();
  } else {
    check(rwkvl_eval(ctx.get(), state.get(), ids.data(), ids.size(), chunk, logits.data()));
  }
  const double t1 = now_seconds();

  // The last sampled token is only fed (without the head) when its state is to be saved.
  const bool save_state = args.given("state-out");
  Utf8Stream out;
  int64_t generated = 0;
  for (int64_t i = 0; i < n_predict; ++i) {
    const int32_t token = rwkvl_sampler_sample(sampler.get(), logits.data(), n_vocab);
    if (token < 0) throw Failure(std::string("sampling failed: ") + rwkvl_last_error());
    rwkvl_sampler_accept(sampler.get(), token);
    if (stop_at_eos && token == 0) break;
    write_out(out.push(token_bytes(tok.get(), token)));
    ++generated;
    const bool more = i + 1 < n_predict;
    if (more || save_state) check(rwkvl_eval(ctx.get(), state.get(), &token, 1, 1, more ? logits.data() : nullptr));
  }
  write_out(out.flush());
  const double t2 = now_seconds();
  if (save_state) check(rwkvl_state_save(state.get(), args.str("state-out").c_str()), "--state-out");

  const double tp = t1 - t0, tg = t2 - t1;
  std::fprintf(stderr,
               "\n[prompt: %zu tokens, %.3f s, %.1f tok/s | generation: %lld tokens, %.3f s, %.1f tok/s | "
               "threads %d, seed %llu, tokenizer %s | peak RSS %s]\n",
               n_prompt, tp, tp > 0 ? static_cast<double>(n_prompt) / tp : 0.0, static_cast<long long>(generated),
               tg, tg > 0 ? static_cast<double>(generated) / tg : 0.0, rwkvl_context_threads(ctx.get()),
               static_cast<unsigned long long>(sp.seed), tok_name.c_str(), format_bytes(rwkvl_peak_rss_bytes()).c_str());
  return 0;
}

}  // namespace rwkvl::cli
