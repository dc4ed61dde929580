// rwkv-lite stats: how sparse the channel-mix (FFN) activations are, per layer, over a text. The
// activations relu(Wk x)^2 are read where they enter ffn.value (a calibration tap of the library,
// rwkvl_ffn_sparsity_measure), so the numbers are exactly what a sparse FFN could skip.
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "common.h"
#include "progress.h"

namespace rwkvl::cli {

int cmd_stats(const Args& args) {
  const std::string model_path = require(args, "model");
  // The outputs are checked before any work (an unwritable path fails fast, naming it).
  if (args.given("out")) check(rwkvl_check_output_path(args.str("out").c_str()), "--out");
  if (args.given("plot")) check(rwkvl_check_output_path(args.str("plot").c_str()), "--plot");
  const std::string text = read_file(require(args, "text"), "text file");
  const ModelPtr model = load_model(args);
  const TokenizerPtr tok = model_tokenizer(model.get(), model_path, args.str("tokenizer"));
  std::vector<int32_t> ids = tokenize(tok.get(), text);
  const int64_t max_tokens = args.integer("max-tokens");
  if (max_tokens > 0 && ids.size() > static_cast<size_t>(max_tokens)) ids.resize(static_cast<size_t>(max_tokens));
  if (ids.empty()) args.fail("the text has no tokens");
  const int n_threads = static_cast<int>(args.integer("threads"));  // 0: one per core
  const size_t chunk = args.integer("chunk") > 0 ? static_cast<size_t>(args.integer("chunk")) : 64;

  rwkvl_ffn_sparsity sp{};
  {
    Progress bar("stats", ids.size(), "tok");
    auto on = [](const char*, int64_t done, int64_t, void* user) {
      static_cast<Progress*>(user)->update(static_cast<uint64_t>(done));
    };
    check(rwkvl_ffn_sparsity_measure(model.get(), ids.data(), ids.size(), chunk, n_threads, on, &bar, &sp));
    bar.finish();
  }
  std::unique_ptr<rwkvl_ffn_sparsity, void (*)(rwkvl_ffn_sparsity*)> keep(&sp, rwkvl_ffn_sparsity_free);
  size_t n = 0;
  rwkvl_ffn_sparsity_json(&sp, nullptr, 0, &n);
  std::string js(n + 1, '\0');
  check(rwkvl_ffn_sparsity_json(&sp, js.data(), js.size(), &n));
  js.resize(n);
  nlohmann::json j = nlohmann::json::parse(js);
  j["model"] = model_path;
  const nlohmann::json& layers = j["layers"];
  const size_t F = static_cast<size_t>(sp.n_ffn);
  const double mean_all = sp.zero_frac_mean, secs = sp.seconds;

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
              sp.n_ffn);
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
