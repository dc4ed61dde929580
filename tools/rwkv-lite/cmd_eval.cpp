// rwkv-lite perplexity and logits: feeding text from a fresh state and reading the logits.
#include <algorithm>
#include <bit>
#include <climits>
#include <cerrno>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "common.h"
#include "progress.h"

namespace rwkvl::cli {

namespace {

// -log softmax(logits)[target], in double.
double nll(const float* logits, size_t n, int32_t target) {
  float mx = logits[0];
  for (size_t i = 1; i < n; ++i) mx = std::max(mx, logits[i]);
  double sum = 0.0;
  for (size_t i = 0; i < n; ++i) sum += std::exp(static_cast<double>(logits[i]) - mx);
  return std::log(sum) + mx - static_cast<double>(logits[target]);
}

// NLL of targets[j] under logits row j for j < len, spread over n_threads threads; summed in token order
// so the result does not depend on the thread count.
double block_nll(const float* logits, size_t len, size_t n_vocab, const int32_t* targets, int n_threads) {
  std::vector<double> per_token(len);
  auto work = [&](size_t t, size_t n_workers) {
    for (size_t j = t; j < len; j += n_workers) per_token[j] = nll(logits + j * n_vocab, n_vocab, targets[j]);
  };
  const size_t n_workers = std::min<size_t>(static_cast<size_t>(std::max(1, n_threads)), std::max<size_t>(1, len));
  std::vector<std::thread> threads;
  for (size_t t = 1; t < n_workers; ++t) threads.emplace_back(work, t, n_workers);
  work(0, n_workers);
  for (auto& th : threads) th.join();
  double sum = 0.0;
  for (double v : per_token) sum += v;
  return sum;
}

std::vector<int32_t> parse_token_list(const Args& args, const std::string& list) {
  std::vector<int32_t> ids;
  size_t pos = 0;
  while (pos <= list.size()) {
    size_t comma = list.find(',', pos);
    if (comma == std::string::npos) comma = list.size();
    const std::string item = list.substr(pos, comma - pos);
    errno = 0;
    char* end = nullptr;
    const long long v = std::strtoll(item.c_str(), &end, 10);
    if (item.empty() || *end != '\0' || errno != 0 || v < INT32_MIN || v > INT32_MAX) {
      args.fail("invalid token id '" + item + "' in --tokens (expected comma-separated integers)");
    }
    ids.push_back(static_cast<int32_t>(v));
    pos = comma + 1;
  }
  return ids;
}

}  // namespace

int cmd_perplexity(const Args& args) {
  const std::string model_path = require(args, "model");
  const std::string text = read_file(require(args, "file"), "text file");
  const ModelPtr model = load_model(args);
  const rwkvl_model_info info = model_info(model.get());
  const TokenizerPtr tok = model_tokenizer(model.get(), model_path, args.str("tokenizer"));

  std::vector<int32_t> ids = tokenize(tok.get(), text);
  const int64_t max_tokens = args.integer("max-tokens");
  if (max_tokens > 0 && ids.size() > static_cast<size_t>(max_tokens)) ids.resize(static_cast<size_t>(max_tokens));
  if (ids.size() < 2) {
    throw Failure("perplexity needs at least 2 tokens of text (got " + std::to_string(ids.size()) + ")");
  }

  const ContextPtr ctx = new_context(model.get(), static_cast<int>(args.integer("threads")));
  const StatePtr state = new_state(model.get());
  const size_t chunk = static_cast<size_t>(args.integer("chunk"));
  const size_t n_vocab = static_cast<size_t>(info.n_vocab);
  const int n_threads = rwkvl_context_threads(ctx.get());
  // Logits of a block of tokens at a time: big enough for sequence mode, small enough for 65k vocabularies.
  const size_t block = std::max<size_t>(64, chunk);
  std::vector<float> logits(block * n_vocab);

  // Token i's logits predict token i + 1; the last token is never fed.
  const size_t n_fed = ids.size() - 1;
  Progress progress("perplexity", n_fed, "tok");
  double total_nll = 0.0;
  const double t0 = now_seconds();
  for (size_t pos = 0; pos < n_fed; pos += block) {
    const size_t len = std::min(block, n_fed - pos);
    check(rwkvl_eval_all_logits(ctx.get(), state.get(), ids.data() + pos, len, chunk, logits.data()));
    total_nll += block_nll(logits.data(), len, n_vocab, ids.data() + pos + 1, n_threads);
    progress.update(pos + len);
  }
  const double seconds = now_seconds() - t0;
  progress.finish();

  const double mean_nll = total_nll / static_cast<double>(n_fed);
  const double ppl = std::exp(mean_nll);
  const double tok_per_s = seconds > 0 ? static_cast<double>(n_fed) / seconds : 0.0;
  if (args.on("json")) {
    nlohmann::json j = {{"ppl", ppl},
                        {"tokens", ids.size()},
                        {"predicted", n_fed},
                        {"mean_nll", mean_nll},
                        {"tok_per_s", tok_per_s},
                        {"seconds", seconds},
                        {"threads", n_threads},
                        {"tokenizer", rwkvl_tokenizer_name(tok.get())}};
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::printf("perplexity %.4f (mean NLL %.5f nats over %zu predicted tokens)\n", ppl, mean_nll, n_fed);
    std::printf("tokens %zu, %.2f s, %.1f tok/s, %d thread%s, tokenizer %s\n", ids.size(), seconds, tok_per_s,
                n_threads, n_threads == 1 ? "" : "s", rwkvl_tokenizer_name(tok.get()));
  }
  return 0;
}

int cmd_logits(const Args& args) {
  const std::string model_path = require(args, "model");
  const std::string out_path = require(args, "out");
  if (args.given("tokens") == args.given("text")) args.fail("give exactly one of --tokens IDS or --text TEXT");
  std::vector<int32_t> ids;
  if (args.given("tokens")) ids = parse_token_list(args, args.str("tokens"));

  const ModelPtr model = load_model(args);
  const rwkvl_model_info info = model_info(model.get());
  if (args.given("text")) {
    const TokenizerPtr tok = model_tokenizer(model.get(), model_path, args.str("tokenizer"));
    ids = tokenize(tok.get(), args.str("text"));
  }
  if (ids.empty()) args.fail("no tokens to feed");

  const ContextPtr ctx = new_context(model.get(), static_cast<int>(args.integer("threads")));
  const StatePtr state = new_state(model.get());
  std::vector<float> logits(static_cast<size_t>(info.n_vocab));
  check(rwkvl_eval(ctx.get(), state.get(), ids.data(), ids.size(), static_cast<size_t>(args.integer("chunk")),
                   logits.data()));
  if constexpr (std::endian::native == std::endian::big) {
    for (float& f : logits) f = std::bit_cast<float>(__builtin_bswap32(std::bit_cast<uint32_t>(f)));
  }
  write_file(out_path, logits.data(), logits.size() * sizeof(float), "logits file");
  std::fprintf(stderr, "wrote %zu logits after %zu tokens to %s\n", logits.size(), ids.size(), out_path.c_str());
  return 0;
}

}  // namespace rwkvl::cli
