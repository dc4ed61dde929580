// rwkv-lite convert, synth, info and tokenize: model files and tokenizers.
#include <cstdio>
#include <map>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "args.h"
#include "commands.h"
#include "common.h"

namespace rwkvl::cli {

namespace {

// Projections stored as W ~ B A, over every layer (rwkvl_model_get_matrix, projections 0..7).
int factored_matrices(const rwkvl_model* model, int n_layer) {
  int n = 0;
  for (int l = 0; l < n_layer; ++l)
    for (int p = 0; p < 8; ++p) {
      rwkvl_matrix_info m{};
      check(rwkvl_model_get_matrix(model, l, p, &m));
      n += m.factored;
    }
  return n;
}

// The passes recorded in the file (rwkvl_model_passes_json), as a JSON array.
nlohmann::json model_passes(const rwkvl_model* model) {
  size_t n = 0;
  rwkvl_model_passes_json(model, nullptr, 0, &n);
  std::string text(n + 1, '\0');
  check(rwkvl_model_passes_json(model, text.data(), text.size(), &n));
  text.resize(n);
  return nlohmann::json::parse(text);
}

}  // namespace

int cmd_convert(const Args& args) {
  const std::string in = require(args, "model");
  const std::string out = require(args, "out");
  check(rwkvl_check_output_path(out.c_str()), "--out");  // before loading the model
  const char* dtype = rwkvl_dtype_name(dtype_flag(args, "dtype"));
  const double t0 = now_seconds();
  const ModelPtr model = load_model(args);
  const rwkvl_model_info info = model_info(model.get());
  const std::string format = args.str("format");
  if (format != "gguf" && args.given("tokenizer")) args.fail("--tokenizer goes with --format gguf");
  if (format == "gguf") {
    const TokenizerPtr tok = model_tokenizer(model.get(), in, args.str("tokenizer"));
    check(rwkvl_model_save_gguf(model.get(), tok.get(), out.c_str(), dtype_flag(args, "dtype")));
  } else if (format == "rwkvcpp") {
    const rwkvl_dtype d = dtype_flag(args, "dtype");
    if (d != RWKVL_DTYPE_KEEP && d != RWKVL_DTYPE_F32 && d != RWKVL_DTYPE_F16)
      args.fail("--format rwkvcpp writes f32 or f16 matrices (rwkv.cpp quantises its own files: its quantize.py)");
    check(rwkvl_model_save_rwkvcpp(model.get(), out.c_str(), d));
  } else {
    check(rwkvl_model_save(model.get(), out.c_str(), dtype));
  }
  std::fprintf(stderr, "converted %s (%s %s, %s) -> %s (%s, %s) in %.2f s\n", in.c_str(), info.file_kind,
               info.arch_name, info.weight_dtype, out.c_str(), format.c_str(), dtype, now_seconds() - t0);
  return 0;
}

int cmd_synth(const Args& args) {
  const std::string out = require(args, "out");
  check(rwkvl_check_output_path(out.c_str()), "--out");
  const char* dtype = rwkvl_dtype_name(dtype_flag(args, "dtype"));
  rwkvl_synth_params p{};
  const std::string arch = args.str("arch");
  rwkvl_synth_extras x = rwkvl_synth_default_extras();
  if (args.given("de-rank") && arch != "7a") args.fail("--de-rank needs --arch 7a");
  if (arch == "7a") x.de_rank = static_cast<int>(args.integer("de-rank"));
  p.arch_major = arch[0] - '0';
  p.n_layer = static_cast<int>(args.integer("layers"));
  p.n_embd = static_cast<int>(args.integer("embd"));
  p.n_vocab = static_cast<int>(args.integer("vocab"));
  p.n_ffn = static_cast<int>(args.integer("ffn"));
  p.head_size = static_cast<int>(args.integer("head-size"));
  p.dtype = dtype;
  p.seed = static_cast<uint64_t>(args.integer("seed"));
  check(rwkvl_synth_with(&p, &x, out.c_str()));
  std::fprintf(stderr, "wrote %s: RWKV-%s, %d layers, embd %d, vocab %d, %s\n", out.c_str(), arch.c_str(), p.n_layer,
               p.n_embd, p.n_vocab, dtype);
  return 0;
}

int cmd_info(const Args& args) {
  const std::string path = require(args, "model");
  const ModelPtr model = load_model(args);
  const rwkvl_model_info i = model_info(model.get());
  const int factored = factored_matrices(model.get(), i.n_layer);
  const nlohmann::json passes = model_passes(model.get());
  const std::map<std::string, DtypeBytes> proj = projection_bytes(model.get(), i.n_layer);
  if (args.on("json")) {
    nlohmann::json j = {{"file", path},
                        {"file_kind", i.file_kind},
                        {"arch", i.arch_name},
                        {"arch_major", i.arch_major},
                        {"arch_minor", i.arch_minor},
                        {"weight_dtype", i.weight_dtype},
                        {"n_layer", i.n_layer},
                        {"n_embd", i.n_embd},
                        {"n_vocab", i.n_vocab},
                        {"n_head", i.n_head},
                        {"head_size", i.head_size},
                        {"n_ffn", i.n_ffn},
                        {"ln_x_eps", i.ln_x_eps},
                        {"n_params", i.n_params},
                        {"weight_bytes", i.weight_bytes},
                        {"bytes_per_token", i.bytes_per_token},
                        {"state_floats", i.state_floats}};
    j["factored_matrices"] = factored;
    j["sparse_ffn"] = i.sparse_ffn != 0;
    j["ffn_predictor"] = i.ffn_predictor != 0;
    j["ffn_weight_bytes"] = i.ffn_weight_bytes;
    j["ffn_predictor_bytes"] = i.ffn_predictor_bytes;
    j["passes"] = passes;
    j["projection_storage"] = projection_json(proj);
    std::printf("%s\n", j.dump().c_str());
    return 0;
  }
  std::printf("file             %s\n", path.c_str());
  std::printf("format           %s\n", i.file_kind);
  std::printf("architecture     RWKV %s\n", i.arch_name);
  std::printf("weights          %s\n", i.weight_dtype);
  std::printf("layers           %d\n", i.n_layer);
  std::printf("embedding        %d\n", i.n_embd);
  std::printf("vocabulary       %d\n", i.n_vocab);
  std::printf("heads            %d x %d\n", i.n_head, i.head_size);
  std::printf("ffn              %d\n", i.n_ffn);
  std::printf("ln_x eps         %g\n", static_cast<double>(i.ln_x_eps));
  std::printf("parameters       %llu\n", static_cast<unsigned long long>(i.n_params));
  std::printf("weight bytes     %llu (%s)\n", static_cast<unsigned long long>(i.weight_bytes),
              format_bytes(i.weight_bytes).c_str());
  std::printf("bytes per token  %llu (%s)\n", static_cast<unsigned long long>(i.bytes_per_token),
              format_bytes(i.bytes_per_token).c_str());
  std::printf("state            %llu floats (%s)\n", static_cast<unsigned long long>(i.state_floats),
              format_bytes(i.state_floats * 4).c_str());
  if (factored) std::printf("factored         %d matrices (W ~ B A)\n", factored);
  // Per dtype: what the projections take, in bits per weight of W (masked / 2:4 / factored files store fewer bits).
  for (const auto& [name, d] : proj) std::printf("projections      %s\n", projection_line(name, d).c_str());
  if (i.sparse_ffn)
    std::printf("sparse ffn       neuron-bundled, %s of FFN weights; %s\n", format_bytes(i.ffn_weight_bytes).c_str(),
                i.ffn_predictor ? ("predictors " + format_bytes(i.ffn_predictor_bytes) + " (default --ffn-mode predict)").c_str()
                                : "no predictors (--ffn-mode exact)");
  for (const auto& p : passes) std::printf("pass             %s\n", p.dump().substr(0, 300).c_str());
  return 0;
}

int cmd_tokenize(const Args& args) {
  if (args.given("model") == args.given("tokenizer-kind")) {
    args.fail("give exactly one of -m MODEL or --tokenizer-kind KIND");
  }
  if (args.given("prompt") == args.given("file")) args.fail("give the text with exactly one of -p TEXT or -f FILE");
  const std::string text = args.given("prompt") ? args.str("prompt") : read_file(args.str("file"), "text file");

  TokenizerPtr tok;
  if (args.given("model")) {
    const ModelPtr model = load_model(args);
    tok = model_tokenizer(model.get(), args.str("model"), args.str("tokenizer"));
  } else {
    const std::string kind = args.str("tokenizer-kind");
    const std::string path = args.str("tokenizer");
    if (kind != "byte" && path.empty()) args.fail("--tokenizer-kind " + kind + " needs --tokenizer PATH");
    rwkvl_tokenizer* t = nullptr;
    check(rwkvl_tokenizer_load(kind.c_str(), path.empty() ? nullptr : path.c_str(), &t));
    tok.reset(t);
  }
  const std::vector<int32_t> ids = tokenize(tok.get(), text);
  std::string line;
  for (size_t i = 0; i < ids.size(); ++i) {
    if (i) line += ',';
    line += std::to_string(ids[i]);
  }
  std::printf("%s\n", line.c_str());
  std::fprintf(stderr, "%zu tokens (%s tokenizer)\n", ids.size(), rwkvl_tokenizer_name(tok.get()));
  return 0;
}

}  // namespace rwkvl::cli
