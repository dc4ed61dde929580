// The subcommands of rwkv-lite (one function each; the table in args.cpp maps names to them).
#pragma once

namespace rwkvl::cli {

class Args;

// The process's arguments as main() got them (for `serve`, which runs rwkv-lite-server with them).
extern int g_argc;
extern char** g_argv;

int cmd_generate(const Args& args);    // cmd_generate.cpp
int cmd_eval(const Args& args);        // cmd_eval.cpp
int cmd_perplexity(const Args& args);  // cmd_eval.cpp
int cmd_logits(const Args& args);      // cmd_eval.cpp
int cmd_compress(const Args& args);    // cmd_compress.cpp
int cmd_stats(const Args& args);       // cmd_stats.cpp
int cmd_bench(const Args& args);       // cmd_bench.cpp
int bench_budgets(const Args& args);   // cmd_bench_budget.cpp (bench --budgets)
int bench_table(const Args& args);     // cmd_bench_table.cpp (bench -o md|csv|json)
int cmd_convert(const Args& args);     // cmd_model.cpp
int cmd_synth(const Args& args);       // cmd_model.cpp
int cmd_info(const Args& args);        // cmd_model.cpp
int cmd_tokenize(const Args& args);    // cmd_model.cpp
int cmd_verify(const Args& args);      // cmd_verify.cpp
int cmd_chat(const Args& args);        // cmd_chat.cpp
int cmd_serve(const Args& args);       // cmd_serve.cpp

}  // namespace rwkvl::cli
