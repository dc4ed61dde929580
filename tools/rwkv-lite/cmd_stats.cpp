// rwkv-lite stats: how sparse the channel-mix (FFN) activations are, per layer, over a text. The
// activations relu(Wk x)^2 are read where they enter ffn.value (the projection observer), so the
// numbers are exactly what a sparse FFN could skip.
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include <nlohmann/json.hpp>

#include "api/api_internal.h"
#include "args.h"
#include "commands.h"
#include "common.h"
#include "model/model.h"
#include "progress.h"
#include "runtime/session.h"

namespace rwkvl::cli {

namespace {

struct LayerStats {
  std::vector<float> zero_frac;    // per token
  std::vector<uint64_t> active;    // per neuron: tokens where it is non-zero
};

double percentile(std::vector<float> v, double p) {
  if (v.empty()) return 0.0;
  std::sort(v.begin(), v.end());
  const double pos = p * static_cast<double>(v.size() - 1);
  const size_t i = static_cast<size_t>(pos);
  const double f = pos - static_cast<double>(i);
  return i + 1 < v.size() ? v[i] * (1 - f) + v[i + 1] * f : v[i];
}

// Fewest neurons whose activation counts add up to `share` of all activations.
int64_t neurons_covering(std::vector<uint64_t> counts, double share) {
  std::sort(counts.begin(), counts.end(), std::greater<>());
  const uint64_t total = std::accumulate(counts.begin(), counts.end(), uint64_t{0});
  if (total == 0) return 0;
  uint64_t run = 0;
  for (size_t i = 0; i < counts.size(); ++i) {
    run += counts[i];
    if (static_cast<double>(run) >= share * static_cast<double>(total)) return static_cast<int64_t>(i + 1);
  }
  return static_cast<int64_t>(counts.size());
}

}  // namespace

int cmd_stats(const Args& args) {
  const std::string model_path = require(args, "model");
  // The outputs are checked before any work (an unwritable path fails fast, naming it).
  if (args.given("out")) check(rwkvl_check_output_path(args.str("out").c_str()), "--out");
  if (args.given("plot")) check(rwkvl_check_output_path(args.str("plot").c_str()), "--plot");
  const std::string text = read_file(require(args, "text"), "text file");
  const ModelPtr model = load_model(args);
  const std::shared_ptr<Model> m = api::model_of(model.get());
  const TokenizerPtr tok = model_tokenizer(model.get(), model_path, args.str("tokenizer"));
  std::vector<int32_t> ids = tokenize(tok.get(), text);
  const int64_t max_tokens = args.integer("max-tokens");
  if (max_tokens > 0 && ids.size() > static_cast<size_t>(max_tokens)) ids.resize(static_cast<size_t>(max_tokens));
  if (ids.empty()) args.fail("the text has no tokens");
  int n_threads = static_cast<int>(args.integer("threads"));
  if (n_threads <= 0) n_threads = static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));

  if (m->sparse_ffn())
    throw Failure("stats measures the dense channel-mix: run it on the model the neuron-bundled file was made from "
                  "(`eval --ffn-mode exact --verify` reports the active share of a bundled file)");
  const ModelConfig& cfg = m->config();
  const size_t F = static_cast<size_t>(cfg.n_ffn);
  std::vector<LayerStats> st(static_cast<size_t>(cfg.n_layer));
  for (auto& s : st) s.active.assign(F, 0);
  std::vector<const Matrix*> ffn_v(static_cast<size_t>(cfg.n_layer));
  for (int l = 0; l < cfg.n_layer; ++l) ffn_v[static_cast<size_t>(l)] = &m->layer(l).ffn_v;

  Session ctx(m, n_threads);
  ctx.set_observer([&](const Matrix& mat, const float* X, size_t T) {
    for (size_t l = 0; l < ffn_v.size(); ++l) {
      if (ffn_v[l] != &mat) continue;
      LayerStats& s = st[l];
      for (size_t t = 0; t < T; ++t) {
        const float* row = X + t * F;
        size_t zeros = 0;
        for (size_t i = 0; i < F; ++i) {
          if (row[i] == 0.f) ++zeros;
          else ++s.active[i];
        }
        s.zero_frac.push_back(static_cast<float>(zeros) / static_cast<float>(F));
      }
      return;
    }
  });
  State state;
  state.reset(cfg);
  const size_t chunk = args.integer("chunk") > 0 ? static_cast<size_t>(args.integer("chunk")) : 64;
  Progress bar("stats", ids.size(), "tok");
  const double t0 = now_seconds();
  for (size_t off = 0; off < ids.size(); off += chunk) {
    const size_t T = std::min(chunk, ids.size() - off);
    ctx.eval(state, ids.data() + off, T, T, nullptr, nullptr);
    bar.update(off + T);
  }
  bar.finish();
  const double secs = now_seconds() - t0;

  nlohmann::json layers = nlohmann::json::array();
  double mean_all = 0;
  for (int l = 0; l < cfg.n_layer; ++l) {
    const LayerStats& s = st[static_cast<size_t>(l)];
    const double mean =
        std::accumulate(s.zero_frac.begin(), s.zero_frac.end(), 0.0) / static_cast<double>(s.zero_frac.size());
    mean_all += mean / cfg.n_layer;
    const int64_t never = std::count(s.active.begin(), s.active.end(), uint64_t{0});
    layers.push_back({{"layer", l},
                      {"zero_frac_mean", mean},
                      {"zero_frac_p10", percentile(s.zero_frac, 0.10)},
                      {"zero_frac_p50", percentile(s.zero_frac, 0.50)},
                      {"zero_frac_p90", percentile(s.zero_frac, 0.90)},
                      {"zero_frac_min", percentile(s.zero_frac, 0.0)},
                      {"zero_frac_max", percentile(s.zero_frac, 1.0)},
                      {"neurons_90", neurons_covering(s.active, 0.90)},
                      {"neurons_99", neurons_covering(s.active, 0.99)},
                      {"never_active", never}});
  }
  nlohmann::json j = {{"model", model_path}, {"tokens", ids.size()},       {"n_ffn", F},
                      {"layers", layers},    {"zero_frac_mean", mean_all}, {"seconds", secs}};

  const std::string out = args.str("out");
  if (!out.empty()) {
    const std::string s = j.dump(1) + "\n";
    write_file(out, s.data(), s.size(), "--out");
  }
  const std::string plot = args.str("plot");
  if (!plot.empty()) {
    // Mean zero share with the 10-90 % band, and the share of neurons that carry 90 % / 99 % of all
    // activations. The data is inline; gnuplot prints the SVG, which our writer stores.
    std::string script = "set terminal svg size 800,450 font 'sans,11' background 'white'\n$data << EOD\n";
    char line[256];
    for (const auto& L : layers) {
      std::snprintf(line, sizeof line, "%d %.6f %.6f %.6f %.6f %.6f\n", L["layer"].get<int>(),
                    L["zero_frac_mean"].get<double>(), L["zero_frac_p10"].get<double>(),
                    L["zero_frac_p90"].get<double>(), L["neurons_90"].get<double>() / static_cast<double>(F),
                    L["neurons_99"].get<double>() / static_cast<double>(F));
      script += line;
    }
    script += "EOD\nset title 'FFN activation sparsity over " + std::to_string(ids.size()) +
              " tokens'\nset xlabel 'layer'\nset ylabel 'share'\nset yrange [0:1]\nset grid\nset key bottom left\n"
              "set xtics 1\nplot $data using 1:2:3:4 with yerrorlines lw 2 title 'zero neurons per token (mean, p10-p90)', "
              "$data using 1:5 with linespoints title 'neurons covering 90% of activations', "
              "$data using 1:6 with linespoints title 'neurons covering 99% of activations'\n";
    const std::string svg = run_gnuplot(script);
    if (svg.empty()) args.fail("could not run gnuplot to draw " + plot + " (install gnuplot-nox)");
    write_file(plot, svg.data(), svg.size(), "--plot");
  }
  if (args.on("json")) {
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("FFN sparsity of %s over %zu tokens (%d neurons per layer)\n", model_path.c_str(), ids.size(),
              cfg.n_ffn);
  std::printf("%5s %8s %8s %8s %8s %10s %10s %8s\n", "layer", "zero", "p10", "p50", "p90", "n for 90%", "n for 99%",
              "never");
  for (const auto& L : layers)
    std::printf("%5d %8.4f %8.4f %8.4f %8.4f %10lld %10lld %8lld\n", L["layer"].get<int>(),
                L["zero_frac_mean"].get<double>(), L["zero_frac_p10"].get<double>(), L["zero_frac_p50"].get<double>(),
                L["zero_frac_p90"].get<double>(), L["neurons_90"].get<long long>(), L["neurons_99"].get<long long>(),
                L["never_active"].get<long long>());
  std::printf("mean zero share %.4f; %.1f s\n", mean_all, secs);
  return 0;
}

}  // namespace rwkvl::cli
