// rwkv-lite bench --budgets: generation speed against the memory budget, prefetch off and on side by
// side in one run, as a table, JSON and (--plot) an SVG drawn by gnuplot. Both rows of a budget run the
// same plan (two layer slots); "off" reads each streamed layer when it is needed, "on" has the
// background reader load it while the previous layer computes.
//
// Budgets run in increasing order in this one process: peak RSS (VmHWM) can only grow, so the value read
// after each budget is that budget's peak (the file pages a smaller budget touched stay mapped and are
// counted against the larger ones, which only makes their figures conservative).
#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "common.h"

namespace rwkvl::cli {

namespace {

struct Row {
  std::string label;
  uint64_t budget = 0;
  bool prefetch = false;
  double tok_s = 0, streamed_per_tok = 0, wait_ms_per_tok = 0, io_s_per_tok = 0;
  uint64_t planned = 0, peak = 0, rss = 0;
  bool own_peak = false;  // peak reset before the row (else the process's high-water mark so far)
  std::string error;
};

}  // namespace

int bench_budgets(const Args& args) {
  const std::string model_path = require(args, "model");
  if (args.given("plot")) check(rwkvl_check_output_path(args.str("plot").c_str()), "--plot");  // before any work
  const ModelPtr model = load_model(args);
  const rwkvl_model_info info = model_info(model.get());
  const uint64_t fp16 = info.n_params * 2;
  std::vector<std::pair<std::string, uint64_t>> budgets;
  {
    const std::string list = args.str("budgets");
    size_t pos = 0;
    while (pos <= list.size()) {
      size_t comma = list.find(',', pos);
      if (comma == std::string::npos) comma = list.size();
      const std::string item = list.substr(pos, comma - pos);
      pos = comma + 1;
      if (item.empty()) continue;
      const uint64_t bytes = parse_bytes(item, fp16);
      if (bytes == 0) args.fail("invalid budget '" + item + "' in --budgets (e.g. 25%,50%,64M)");
      budgets.emplace_back(item, bytes);
    }
    if (budgets.empty()) args.fail("--budgets needs at least one budget");
    std::sort(budgets.begin(), budgets.end(), [](const auto& a, const auto& b) { return a.second < b.second; });
  }
  if (args.given("mem-budget")) args.fail("give either --mem-budget or --budgets");
  const int n_gen = static_cast<int>(args.integer("gen-tokens"));
  const size_t n_prompt = std::min<size_t>(static_cast<size_t>(args.integer("prompt-tokens")), 16);
  const uint64_t seed = static_cast<uint64_t>(args.integer("seed"));
  std::vector<Row> rows;
  const bool json = args.on("json");
  if (!json) {
    std::printf("system: %s\n", rwkvl_system_info());
    std::printf("model: %s (%s %s, %d layers, embd %d, vocab %d, %s weights, fp16 size %s)\n", model_path.c_str(),
                info.file_kind, info.arch_name, info.n_layer, info.n_embd, info.n_vocab,
                format_bytes(info.weight_bytes).c_str(), format_bytes(fp16).c_str());
    std::fflush(stdout);
  }
  for (const auto& [label, budget] : budgets) {
    for (int pf = 0; pf < 2; ++pf) {
      // Each row starts from a clean process: the model's pages the last row touched are dropped, freed heap
      // is returned and the peak is reset, so the row's peak RSS is its own.
      check(rwkvl_model_release_pages(model.get()));
      release_free_memory();
      const bool own_peak = rwkvl_reset_peak_rss() == 1;
      Row r;
      r.label = label;
      r.budget = budget;
      r.prefetch = pf == 1;
      try {
        const ContextPtr ctx = new_context(model.get(), static_cast<int>(args.integer("threads")));
        Settings s = settings(args, model.get());
        s.mem.budget_bytes = budget;
        s.mem.prefetch = pf ? 1 : 2;  // the same plan (two slots) with and without the background reader
        s.mem.max_chunk = static_cast<int>(std::max<size_t>(1, n_prompt));
        apply(s, ctx.get());
        const StatePtr state = new_state(model.get());
        std::vector<float> logits(static_cast<size_t>(info.n_vocab));
        uint64_t x = seed;
        std::vector<int32_t> prompt(n_prompt);
        for (auto& t : prompt) {
          x = x * 6364136223846793005ull + 1442695040888963407ull;
          t = static_cast<int32_t>((x >> 33) % static_cast<uint64_t>(info.n_vocab));
        }
        check(rwkvl_eval(ctx.get(), state.get(), prompt.data(), prompt.size(), 0, logits.data()));
        int32_t token = prompt.back();
        for (int i = 0; i < 2; ++i) {  // warm-up: every resident page touched, the reader started
          check(rwkvl_eval(ctx.get(), state.get(), &token, 1, 1, logits.data()));
          token = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
        }
        check(rwkvl_context_reset_memory_stats(ctx.get()));
        const double t0 = now_seconds();
        for (int i = 0; i < n_gen; ++i) {
          check(rwkvl_eval(ctx.get(), state.get(), &token, 1, 1, logits.data()));
          token = static_cast<int32_t>(std::max_element(logits.begin(), logits.end()) - logits.begin());
        }
        const double secs = now_seconds() - t0;
        const rwkvl_memory_stats ms = memory_stats(ctx.get());
        r.tok_s = n_gen / secs;
        r.streamed_per_tok = static_cast<double>(ms.io_bytes) / n_gen;
        r.wait_ms_per_tok = 1e3 * ms.layer_wait_seconds / n_gen;
        r.io_s_per_tok = ms.io_seconds / n_gen;
        r.planned = ms.planned_bytes;
        r.rss = rwkvl_current_rss_bytes();
      } catch (const Failure& e) {
        r.error = e.what();
      }
      r.peak = rwkvl_peak_rss_bytes();
      r.own_peak = own_peak;
      rows.push_back(r);
    }
  }
  nlohmann::json arr = nlohmann::json::array();
  for (const Row& r : rows) {
    nlohmann::json j = {{"budget", r.label},
                        {"budget_bytes", r.budget},
                        {"prefetch", r.prefetch},
                        {"tok_per_s", r.error.empty() ? nlohmann::json(r.tok_s) : nlohmann::json(nullptr)},
                        {"planned_bytes", r.planned},
                        {"peak_rss_bytes", r.peak},
                        {"peak_rss_per_row", r.own_peak},
                        {"rss_bytes", r.rss},
                        {"read_bytes_per_token", r.streamed_per_tok},
                        {"layer_wait_ms_per_token", r.wait_ms_per_tok}};
    if (!r.error.empty()) j["error"] = r.error;
    arr.push_back(j);
  }
  const std::string plot = args.str("plot");
  if (!plot.empty()) {
    // The data is inline; gnuplot prints the SVG, which our writer stores.
    std::string d = "$data << EOD\n";
    char line[256];
    for (size_t i = 0; i + 1 < rows.size(); i += 2) {
      if (!rows[i].error.empty() || !rows[i + 1].error.empty()) continue;
      std::snprintf(line, sizeof line, "%.3f %.4f %.4f\n", static_cast<double>(rows[i].budget) / 1048576.0, rows[i].tok_s,
                    rows[i + 1].tok_s);
      d += line;
    }
    d += "EOD\n";
    std::string title = "generation speed against the memory budget";
    const rwkvl_memory_params mp = settings(args, model.get()).mem;
    if (mp.io_mb_per_s > 0) {
      std::snprintf(line, sizeof line, " (storage %.0f MB/s)", mp.io_mb_per_s);
      title += line;
    }
    std::string script = "set terminal svg size 800,450 font 'sans,11' background 'white'\n";
    script += d;
    script += "set title '";
    script += title;
    script += "'\nset xlabel 'memory budget (MiB)'\nset ylabel 'tokens/s'\nset grid\nset key top left\nset yrange [0:*]\n";
    script += "plot $data using 1:2 with linespoints lw 2 title 'prefetch off', ";
    script += "$data using 1:3 with linespoints lw 2 title 'prefetch on (reader one layer ahead)'\n";
    const std::string svg = run_gnuplot(script);
    if (svg.empty()) args.fail("could not run gnuplot to draw " + plot + " (install gnuplot-nox)");
    write_file(plot, svg.data(), svg.size(), "--plot");
  }
  if (json) {
    std::printf("%s\n", nlohmann::json({{"model", model_path}, {"system", rwkvl_system_info()}, {"gen_tokens", n_gen},
                                        {"budget_sweep", arr}})
                            .dump()
                            .c_str());
    return 0;
  }
  std::printf("\n%-10s %10s %9s %12s %12s %12s %14s %12s %9s\n", "budget", "bytes", "prefetch", "gen tok/s", "planned",
              "peak RSS", "read/token", "wait/token", "speedup");
  for (size_t i = 0; i < rows.size(); ++i) {
    const Row& r = rows[i];
    if (!r.error.empty()) {
      std::printf("%-10s %10s %9s  %s\n", r.label.c_str(), format_bytes(r.budget).c_str(), r.prefetch ? "on" : "off",
                  r.error.c_str());
      continue;
    }
    const Row* off = r.prefetch && i > 0 && rows[i - 1].error.empty() ? &rows[i - 1] : nullptr;
    char speed[32] = "";
    if (off) std::snprintf(speed, sizeof speed, "%.2fx", r.tok_s / off->tok_s);
    std::printf("%-10s %10s %9s %12.2f %12s %12s %14s %9.2f ms %9s\n", r.label.c_str(), format_bytes(r.budget).c_str(),
                r.prefetch ? "on" : "off", r.tok_s, format_bytes(r.planned).c_str(), format_bytes(r.peak).c_str(),
                format_bytes(static_cast<uint64_t>(r.streamed_per_tok)).c_str(), r.wait_ms_per_tok, speed);
  }
  std::printf("%s; read/token counts every read from the file (layers, head rows, embedding rows); both rows of a "
              "budget use the same plan (two layer slots)\n",
              !rows.empty() && rows[0].own_peak ? "peak RSS per row (model pages dropped and VmHWM reset before each)"
                                                : "peak RSS is the process high-water mark so far (budgets run smallest first)");
  return 0;
}

}  // namespace rwkvl::cli
