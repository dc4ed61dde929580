#include "args.h"

#include <cctype>
#include <cerrno>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <sstream>

#include "commands.h"
#include "rwkv_lite.h"

namespace rwkvl::cli {

namespace {

using K = FlagKind;
constexpr double kI32 = 2147483647.0;
constexpr double kBig = 1e15;  // "practically unbounded" (exactly representable as a double and an int64)

// The one place where flags are declared. Rows may share a name when subcommands need different
// defaults or ranges (e.g. --dtype, --seed); a subcommand sees the first row that lists it.
const std::vector<FlagSpec> kFlags = {
    // -- everywhere
    {"help", "h", K::kSwitch, "*", nullptr, "", "show this help and exit"},

    // -- model and evaluation
    {"model", "m", K::kString, "generate eval perplexity bench logits convert info tokenize chat serve", nullptr,
     "FILE", "model file: rwkv.cpp .bin, PyTorch .pth, .safetensors or native rwkv-lite"},
    {"weight-dtype", nullptr, K::kChoice, "generate eval perplexity bench logits chat serve info", "keep", "TYPE",
     "hold the weight matrices as this type after loading", 0, 0, false, "keep|f32|f16|bf16|i8"},
    {"threads", "t", K::kInt, "generate eval perplexity bench logits chat serve", "0", "N",
     "worker threads; 0 = one per core", 0, 4096},
    {"chunk", nullptr, K::kInt, "generate eval perplexity bench logits chat serve", "0", "N",
     "tokens per sequence-mode chunk when feeding text (0 = library default, 1 = RNN mode; at most 1024: the scratch "
     "grows with it and longer chunks are no faster)",
     0, 1024},
    {"ffn-mode", nullptr, K::kChoice, "generate eval perplexity bench logits chat serve", "auto", "MODE",
     "channel-mix evaluation: dense (every neuron), exact (every key row, value rows of non-zero neurons only) or "
     "predict (only the neurons the activation predictor picks; files made by compress --sparse-ffn); auto = "
     "predict when the file has predictors, else dense",
     0, 0, false, "auto|dense|exact|predict"},
    {"ffn-cache", nullptr, K::kString, "generate eval perplexity bench logits chat serve", nullptr, "BYTES",
     "stream the neuron-bundled FFN weights from the model file through a RAM cache of BYTES (suffix K, M, G; or N% "
     "of the FFN weight bytes): hot neurons pinned, the rest read on demand"},
    {"ffn-prefetch", nullptr, K::kSwitch, "generate eval perplexity bench logits chat serve", nullptr, "",
     "with --ffn-cache: a background thread reads the next layer's predicted neurons (its predictor run on this "
     "layer's input) while this layer computes; pays off when storage is slow, not when the file is in the page "
     "cache (see docs/CLI.md)"},
    {"verify", nullptr, K::kSwitch, "eval bench", nullptr, "",
     "predict mode: also compute every FFN key row to measure the predictor's recall (slower)"},
    {"ffn-random", nullptr, K::kString, "bench", nullptr, "LIST",
     "also time the FFN with forced random active sets of these shares of the neurons, e.g. 0.1,0.5 (the predictor "
     "still runs), side by side with dense"},
    {"head-mode", nullptr, K::kChoice, "generate eval perplexity bench logits chat serve", "auto", "MODE",
     "output head: full (every head row) or cluster (the hierarchical head of files made by compress --cluster-head: "
     "exact logits for the most probable clusters, pseudo-logits for the rest); auto = cluster when the file has one",
     0, 0, false, "auto|full|cluster"},
    {"head-p", nullptr, K::kFloat, "generate eval perplexity bench logits chat serve", "0.95", "P",
     "cluster head: take clusters in order of probability until their cumulative probability reaches P", 0, 1, true},
    {"head-min", nullptr, K::kInt, "generate eval perplexity bench logits chat serve", "3", "N",
     "cluster head: at least N clusters get exact logits", 1, 1 << 24},
    {"head-max", nullptr, K::kInt, "generate eval perplexity bench logits chat serve", "100", "N",
     "cluster head: at most N clusters get exact logits", 1, 1 << 24},
    {"no-head-compare", nullptr, K::kSwitch, "eval", nullptr, "",
     "cluster head: do not also run the full head for the agreement figures (head_top1_agree, head_kl): speed "
     "and bytes read are then those of the cluster head alone"},
    {"emb-cache", nullptr, K::kInt, "generate eval perplexity bench logits chat serve", "0", "ROWS",
     "read embedding rows on demand from the model file into an LRU cache of ROWS rows (the table is never "
     "resident; 0 = read in place)",
     0, 1 << 30},
    {"de-cache", nullptr, K::kInt, "generate eval perplexity bench logits chat", "-1", "TOKENS",
     "RWKV-7a: keep the DeepEmbed tables in the model file and cache the rows of this many tokens (every layer's "
     "row of a token, read together; the file's hot tokens pinned). -1 = the plan's under --mem-budget, else 512 "
     "when the tables hold 64 MiB or more; 0 = read them in place",
     -1, 1 << 30},
    {"de-rounds", nullptr, K::kInt, "bench", "3", "N",
     "RWKV-7a with the DeepEmbed tables on storage (no --mem-budget): also time generation with them behind the "
     "cache and read in place, N alternating rounds each (0 = not)",
     0, 100},
    {"io-throttle", nullptr, K::kFloat, "generate eval perplexity bench logits chat serve", nullptr, "MB/S",
     "simulate storage of this bandwidth for every read from the model file (SD card ~90, eMMC ~250, UFS/NVMe "
     "1000-2000)",
     0, 1e6, true},
    {"io-latency", nullptr, K::kFloat, "generate eval perplexity bench logits chat serve", nullptr, "US",
     "with --io-throttle or --storage: simulated access time per read, microseconds", 0, 1e7},
    {"storage", nullptr, K::kChoice, "generate eval perplexity bench logits chat", nullptr, "DEVICE",
     "simulate the model file on this storage: sd (90 MB/s, 1 ms per read, 1 at a time), emmc (250 MB/s, 150 us, "
     "2), ufs (1.5 GB/s, 80 us, 8), nvme (3 GB/s, 60 us, 32) or page-cache (no cost); --io-throttle, --io-latency "
     "and --io-queue override its figures",
     0, 0, false, "sd|emmc|ufs|nvme|page-cache"},
    {"io-queue", nullptr, K::kInt, "generate eval perplexity bench logits chat", nullptr, "N",
     "with --io-throttle or --storage: reads the simulated device serves at once (their access times overlap)", 1,
     4096},
    {"latency-target", nullptr, K::kFloat, "generate eval perplexity bench logits chat", nullptr, "MS",
     "with --mem-budget: the plan must predict at most MS per token (storage time of its reads + --compute-ms); files "
     "made with compress --fidelities read the head clusters that cost the least calibration loss per byte at int4 "
     "until it does; an error names the fastest plan's prediction when none can",
     0, 1e9, true},
    {"compute-ms", nullptr, K::kFloat, "generate eval perplexity bench logits chat", "0", "MS",
     "with --latency-target: compute per token the plan adds to its storage time (1000 / the tok/s bench measures "
     "with every weight resident)",
     0, 1e9},
    {"mem-baseline", nullptr, K::kString, "generate eval perplexity bench logits chat", nullptr, "BYTES",
     "with --mem-budget: the bytes the process holds before the plan (binary, libraries, tokenizer; --print-plan "
     "shows the measured one) instead of measuring it: the same figure gives the same plan on every run. Too low a "
     "figure lets the peak exceed the budget"},
    {"fidelity", nullptr, K::kChoice, "generate eval perplexity bench logits chat", "auto", "KIND",
     "with --mem-budget, files made with compress --fidelities: the head clusters' fidelity: auto (the head's own "
     "dtype, int4 where a --latency-target needs it), high (every cluster at the head's dtype) or int4 (every "
     "cluster)",
     0, 0, false, "auto|high|int4"},
    {"mem-budget", nullptr, K::kString, "generate eval perplexity bench logits compress chat serve", nullptr, "BYTES",
     "run within this much resident memory (peak RSS; suffix K, M, G, or N% of the model's fp16 bytes): the plan "
     "keeps what fits resident and streams the rest from the file (native files) through a preload buffer; "
     "compress: trains fewer predictor layers side by side to fit, and refuses a budget it cannot meet"},
    {"print-plan", nullptr, K::kSwitch, "generate eval perplexity bench logits compress chat", nullptr, "",
     "with --mem-budget: print the memory plan (what is resident, what is streamed, buffer sizes) to stderr; "
     "compress: each stage's expected peak memory and share of the work, before it starts"},
    {"no-prefetch", nullptr, K::kSwitch, "generate eval perplexity bench logits chat serve", nullptr, "",
     "with --mem-budget: read streamed layers when needed instead of one layer ahead in the background"},
    {"tokenizer", nullptr, K::kString, "generate eval perplexity logits tokenize chat serve", nullptr, "PATH",
     "tokenizer file (default: chosen by vocabulary size and searched for beside the model, in "
     "$RWKVL_TOKENIZER_DIR and ./tokenizers)"},

    // -- generate
    {"prompt", "p", K::kString, "generate tokenize", nullptr, "TEXT", "prompt text"},
    {"file", "f", K::kString, "generate tokenize", nullptr, "FILE", "read the prompt from FILE (instead of -p)"},
    {"file", "f", K::kString, "perplexity", nullptr, "FILE", "text file to evaluate"},
    {"n-predict", "n", K::kInt, "generate", "128", "N", "number of tokens to generate", 0, kBig},
    {"temp", nullptr, K::kFloat, "generate", "1.0", "T", "sampling temperature (0 = greedy: always the most likely)", 0,
     1e6},
    {"top-k", nullptr, K::kInt, "generate", "0", "K", "sample only from the K most likely tokens (0 = off)", 0, kI32},
    {"top-p", nullptr, K::kFloat, "generate", "1.0", "P",
     "sample only from the smallest set of likeliest tokens whose probability reaches P (1 = off)", 0, 1, true},
    {"presence-penalty", nullptr, K::kFloat, "generate", "0", "A",
     "subtract A from the logit of every token generated so far", -1e6, 1e6},
    {"frequency-penalty", nullptr, K::kFloat, "generate", "0", "B",
     "subtract B per (decayed) occurrence of a token generated so far", -1e6, 1e6},
    {"penalty-decay", nullptr, K::kFloat, "generate", "1.0", "D",
     "multiply the occurrence counts by D after each generated token", 0, 1},
    {"seed", "s", K::kInt, "generate", "-1", "S", "random seed (-1 = from the clock; printed at the end)", -1, kBig},
    {"stop-at-eos", nullptr, K::kSwitch, "generate", nullptr, "",
     "stop at token 0 (end of text) of World and NeoX vocabularies"},
    {"state-in", nullptr, K::kString, "generate", nullptr, "FILE",
     "start from the recurrent state saved in FILE (by --state-out)"},
    {"state-out", nullptr, K::kString, "generate", nullptr, "FILE",
     "save the state after the prompt and all generated tokens to FILE"},

    // -- chat (RWKV's chat sampling: ChatRWKV's defaults)
    {"system", nullptr, K::kString, "chat", nullptr, "TEXT", "a system message before the conversation"},
    {"n-predict", "n", K::kInt, "chat", "500", "N", "most tokens of one reply", 1, kBig},
    {"temp", nullptr, K::kFloat, "chat", "1.0", "T", "sampling temperature (0 = greedy)", 0, 1e6},
    {"top-k", nullptr, K::kInt, "chat", "0", "K", "sample only from the K most likely tokens (0 = off)", 0, kI32},
    {"top-p", nullptr, K::kFloat, "chat", "0.3", "P", "nucleus sampling: the likeliest tokens up to probability P", 0,
     1, true},
    {"presence-penalty", nullptr, K::kFloat, "chat", "0.5", "A", "subtract A from every token of the reply so far",
     -1e6, 1e6},
    {"frequency-penalty", nullptr, K::kFloat, "chat", "0.5", "B", "subtract B per (decayed) occurrence in the reply",
     -1e6, 1e6},
    {"penalty-decay", nullptr, K::kFloat, "chat", "0.996", "D", "multiply the occurrence counts by D per token", 0, 1},
    {"seed", "s", K::kInt, "chat", "0", "S", "random seed of the first reply (each reply adds one)", 0, kBig},

    // -- serve
    {"host", nullptr, K::kString, "serve", "127.0.0.1", "ADDR", "address to listen on"},
    {"port", nullptr, K::kInt, "serve", "8080", "PORT", "port to listen on (0 = any free port, printed)", 0, 65535},
    {"parallel", "np", K::kInt, "serve", "1", "N", "requests generated at once (slots sharing the model)", 1, 256},
    {"queue", nullptr, K::kInt, "serve", "64", "N", "requests that may wait for a slot; more get 429", 0, 100000},
    {"state-cache", nullptr, K::kString, "serve", "64M", "BYTES",
     "prefix-state cache: states at message ends and every --cache-every prompt tokens, reused by later requests "
     "that share the prefix (0 = off)"},
    {"cache-every", nullptr, K::kInt, "serve", "512", "N",
     "also cache the state every N prompt tokens (0 = only at "
     "message ends)",
     0, kI32},
    {"max-body", nullptr, K::kString, "serve", "8M", "BYTES", "larger request bodies get 413"},
    {"max-tokens", nullptr, K::kInt, "serve", "4096", "N", "cap on a request's max_tokens", 1, kI32},
    {"max-prompt", nullptr, K::kInt, "serve", "32768", "N", "longer prompts (tokens) get 400", 1, kI32},
    {"deadline", nullptr, K::kFloat, "serve", "300", "S", "a request's time limit, queueing included (0 = none)", 0,
     1e9},
    {"idle-timeout", nullptr, K::kFloat, "serve", "5", "S", "close connections silent this long", 0.001, 3600},
    {"grace", nullptr, K::kFloat, "serve", "10", "S", "on SIGINT/SIGTERM: time running requests get to finish", 0,
     3600},
    {"api-key", nullptr, K::kString, "serve", nullptr, "KEY",
     "require \"Authorization: Bearer KEY\" (all but /health)"},
    {"alias", nullptr, K::kString, "serve", nullptr, "NAME", "the model's id in responses (default: the file name)"},

    // -- perplexity / bench / info
    {"max-tokens", nullptr, K::kInt, "eval perplexity", "0", "N", "evaluate only the first N tokens (0 = all)", 0,
     kBig},
    {"json", nullptr, K::kSwitch, "eval perplexity bench info", nullptr, "", "print one JSON object instead of text"},
    {"prompt-tokens", "p", K::kInt, "bench", "128", "N", "tokens fed in sequence mode (prompt processing)", 1, 1 << 20},
    {"gen-tokens", "n", K::kInt, "bench", "64", "N", "tokens generated one at a time", 1, 1 << 20},
    {"no-bandwidth", nullptr, K::kSwitch, "bench", nullptr, "", "skip measuring the machine's memory bandwidth"},
    {"budgets", nullptr, K::kString, "bench", nullptr, "LIST",
     "generation speed under each memory budget of the list (BYTES or N% of the fp16 bytes, e.g. 25%,50%,100%), "
     "with prefetch off and on side by side (add --io-throttle to simulate storage)"},
    {"seed", "s", K::kInt, "bench", "1234", "S", "seed of the random token ids", 0, kBig},
    {"output", "o", K::kChoice, "bench", nullptr, "FMT",
     "llama-bench's table: pp<N> and tg<N> rows (N from --prompt-tokens, default 512, and --gen-tokens, default "
     "128), t/s as mean ± sd over -r runs, beside bytes per token and the share of the bandwidth bound; md, csv or "
     "json",
     0, 0, false, "md|csv|json"},
    {"repetitions", "r", K::kInt, "bench", "5", "N", "with -o: runs of each test (after one warm-up run)", 1, 1000},

    // -- eval
    {"text", nullptr, K::kString, "eval", nullptr, "FILE",
     "text file for perplexity and bits per byte, fed as one stream from a fresh state"},
    {"lambada", nullptr, K::kString, "eval", nullptr, "FILE",
     "LAMBADA jsonl file (one {\"text\": ...} a line), scored as lm-eval's lambada_openai"},
    {"lambada-max", nullptr, K::kInt, "eval", "0", "N", "evaluate only the first N LAMBADA passages (0 = all)", 0,
     kBig},
    {"lambada-out", nullptr, K::kString, "eval", nullptr, "FILE",
     "write one JSON line per LAMBADA passage (target and greedy tokens, NLL, correct)"},

    // -- logits
    {"tokens", nullptr, K::kString, "logits", nullptr, "IDS", "comma-separated token ids, e.g. 34,105,110"},
    {"text", nullptr, K::kString, "logits", nullptr, "TEXT", "text to tokenize and feed (instead of --tokens)"},
    {"out", "o", K::kString, "logits", nullptr, "FILE", "where to write the logits (n_vocab float32, little-endian)"},

    // -- convert / synth
    {"out", "o", K::kString, "convert synth", nullptr, "FILE", "output model file (native rwkv-lite format)"},
    {"format", nullptr, K::kChoice, "convert", "native", "FMT",
     "output format: native (rwkv-lite), gguf (llama.cpp's rwkv6/rwkv7 layout with the vocabulary; --dtype i8 "
     "writes Q8_0, q4 writes Q4_1) or rwkvcpp (rwkv.cpp's file, as its converter writes it: --dtype f32 or f16, "
     "keep = f16 unless every matrix is f32; quantise it with rwkv.cpp)",
     0, 0, false, "native|gguf|rwkvcpp"},
    {"tokenizer", nullptr, K::kString, "convert", nullptr, "PATH",
     "--format gguf: the vocabulary to embed (default: the model's)"},
    {"dtype", nullptr, K::kChoice, "convert", "keep", "TYPE",
     "matrix type in the output file (gguf: i8 is written as Q8_0, q4 as Q4_1)", 0, 0, false,
     "keep|f32|f16|bf16|i8|q4"},
    {"dtype", nullptr, K::kChoice, "synth", "f32", "TYPE", "matrix type in the output file", 0, 0, false,
     "f32|f16|bf16|i8"},
    {"arch", nullptr, K::kChoice, "synth", "7", "V",
     "RWKV architecture version: 4, 5 (5.2), 6, 7 or 7a (7 with DeepEmbed token tables in every layer, merged as a "
     "conversion stores them)",
     0, 0, false, "4|5|6|7|7a"},
    {"de-rank", nullptr, K::kInt, "synth", "32", "R",
     "--arch 7a: rank of the DeepEmbed tables (R x R values per token "
     "and layer; official files: 32)",
     1, 256},
    {"layers", nullptr, K::kInt, "synth", "12", "N", "number of layers", 1, 4096},
    {"embd", nullptr, K::kInt, "synth", "768", "N", "embedding size", 1, 1 << 20},
    {"vocab", nullptr, K::kInt, "synth", "65536", "N", "vocabulary size", 1, kI32},
    {"ffn", nullptr, K::kInt, "synth", "0", "N", "FFN hidden size (0 = the architecture's default)", 0, 1 << 24},
    {"head-size", nullptr, K::kInt, "synth", "64", "N", "attention head size (v5+)", 1, 1 << 16},
    {"seed", "s", K::kInt, "synth", "0", "S", "seed of the random weights", 0, kBig},

    // -- compress
    {"model", "m", K::kString, "compress", nullptr, "FILE", "input model (any format the runtime reads)"},
    {"out", "o", K::kString, "compress", nullptr, "FILE", "output model file (native rwkv-lite format)"},
    {"lowrank", nullptr, K::kChoice, "compress", nullptr, "METHOD",
     "factor the target projections W ~ B A: svd (plain truncated SVD) or asvd (activation-aware, needs --calib)", 0, 0,
     false, "svd|asvd"},
    {"rank-frac", nullptr, K::kFloat, "compress", "0", "F", "rank = round(F x min(rows, cols)), e.g. 0.25", 0, 1},
    {"rank", nullptr, K::kInt, "compress", "0", "R", "fixed rank (instead of --rank-frac)", 0, kI32},
    {"targets", nullptr, K::kString, "compress", nullptr, "LIST",
     "comma-separated projections to factor: att.receptance, att.key, att.value, att.gate, att.output, ffn.key, "
     "ffn.value, ffn.receptance, or 'all' (default: the time-mix receptance, key, value and gate)"},
    {"budget", nullptr, K::kString, "compress", nullptr, "BYTES",
     "choose per-matrix ranks so the weights fit in BYTES (suffix K, M, G = KiB, MiB, GiB), minimising the summed "
     "relative output error (instead of --rank / --rank-frac)"},
    {"diag", nullptr, K::kSwitch, "compress", nullptr, "",
     "also fit a diagonal term W ~ B A + diag(d) (square matrices)"},
    {"force", nullptr, K::kSwitch, "compress", nullptr, "",
     "keep factorisations that do not save bytes (they are skipped and reported otherwise)"},
    {"damp", nullptr, K::kFloat, "compress", "0.001", "X",
     "asvd: add X times the mean input variance to the diagonal of the input second moment", 0, 1e6},
    {"calib", nullptr, K::kString, "compress", nullptr, "FILE",
     "calibration text (asvd and --sparse-ffn; with svd it adds calibration output errors to the report)"},
    {"prune", nullptr, K::kChoice, "compress", nullptr, "METHOD",
     "prune the projections first: magnitude (smallest |W| of each matrix), wanda (smallest |W| x ||x|| of each "
     "output row; needs --calib) or dsnot (wanda, then prune-and-grow swaps that cut each row's expected output "
     "error; needs --calib)",
     0, 0, false, "magnitude|wanda|dsnot"},
    {"sparsity", nullptr, K::kFloat, "compress", nullptr, "S",
     "--prune: share of each matrix's weights removed, in (0, 1)", 0, 1, true},
    {"pattern", nullptr, K::kString, "compress", nullptr, "N:M",
     "--prune: at most N non-zeros in every M consecutive columns (2:4, 4:8, ...); 2:4 is stored packed "
     "(f16_2of4: 0.5625x the bytes of f16)"},
    {"prune-targets", nullptr, K::kString, "compress", nullptr, "LIST",
     "--prune: comma-separated projections to prune (as --targets; default: every projection)"},
    {"prune-store", nullptr, K::kChoice, "compress", "auto", "HOW",
     "--prune: auto (2:4 packed as f16_2of4, any other sparsity masked as f16_masked where smaller than dense), "
     "dense (zeros in place) or packed (masked even where larger)",
     0, 0, false, "auto|dense|packed"},
    {"dsnot-cycles", nullptr, K::kInt, "compress", "50", "N", "--prune dsnot: prune-and-grow swaps per row at most", 0,
     1 << 20},
    {"dsnot-threshold", nullptr, K::kFloat, "compress", "0", "X",
     "--prune dsnot: a row stops once its expected output error is within X", 0, 1e30},
    {"dsnot-var-power", nullptr, K::kFloat, "compress", "1", "P",
     "--prune dsnot: growing candidates ranked by W E[x] / Var[x]^P", -8, 8},
    {"dsnot-any-sign", nullptr, K::kSwitch, "compress", nullptr, "",
     "--prune dsnot: keep swapping while the error is above the threshold even when a swap flips its sign (the "
     "reference code's default; the paper and this tool stop the row)"},
    {"sparse-ffn", nullptr, K::kSwitch, "compress", nullptr, "",
     "store the channel-mix neuron-bundled (hot neurons first) with activation predictors (MLP + 1-bit key copy) "
     "trained on --calib, so the runtime reads only the neurons a token needs"},
    {"recall", nullptr, K::kFloat, "compress", "0.99", "R",
     "--sparse-ffn: recall of active neurons the predictors must reach on new text (thresholds are set for "
     "R + (1 - R) / 4 on held-out calibration tokens, a margin for text that differs from the calibration)",
     0.5, 1, true},
    {"hidden", nullptr, K::kInt, "compress", "64", "H", "--sparse-ffn: hidden width of the MLP predictor", 1, 65536},
    {"epochs", nullptr, K::kInt, "compress", "20", "N", "--sparse-ffn: training epochs of the MLP predictor", 1,
     100000},
    {"lr", nullptr, K::kFloat, "compress", "0.003", "X", "--sparse-ffn: Adam step size of the MLP predictor", 0, 1,
     true},
    {"pred-dtype", nullptr, K::kChoice, "compress", "i8", "TYPE",
     "--sparse-ffn: storage of the MLP predictor: i8 (per-row, f16 scales; half the bytes) or f16", 0, 0, false,
     "i8|f16"},
    {"holdout", nullptr, K::kFloat, "compress", "0.2", "F",
     "--sparse-ffn: share of the calibration tokens (the last ones) held out to choose the thresholds", 0.01, 0.9},
    {"seed", "s", K::kInt, "compress", "1", "S", "--sparse-ffn / --cluster-head: seed of training and k-means", 0,
     kBig},
    {"no-predictor", nullptr, K::kSwitch, "compress", nullptr, "",
     "--sparse-ffn: bundle only (exact mode), no predictors"},
    {"cluster-head", nullptr, K::kInt, "compress", nullptr, "K",
     "build the hierarchical head: cluster the vocabulary into K clusters (PCA of the head rows, k-means; clusters "
     "above --cluster-cap are split) and distil a cluster head on --calib text (paper: K = 200)",
     2, 1 << 20},
    {"fidelities", nullptr, K::kString, "compress", nullptr, "HIGH,int4",
     "--cluster-head: also store every cluster's head rows at int4 and profile each cluster's importance (the "
     "calibration loss increase when it alone is int4); HIGH = the head's own dtype (int8 with --quant int8 "
     "--quant-head). Run under --mem-budget with --latency-target MS or --fidelity"},
    {"cluster-cap", nullptr, K::kInt, "compress", "1024", "N", "--cluster-head: most tokens in one cluster", 1,
     1 << 30},
    {"pca-dims", nullptr, K::kInt, "compress", "200", "N", "--cluster-head: PCA components the k-means runs on", 1,
     1 << 20},
    {"head-epochs", nullptr, K::kInt, "compress", "30", "N", "--cluster-head: distillation epochs", 1, 100000},
    {"head-lr", nullptr, K::kFloat, "compress", "0.01", "X", "--cluster-head: Adam step size of the distillation", 0,
     10, true},
    {"head-prior", nullptr, K::kChoice, "compress", "calib", "KIND",
     "--cluster-head: how an unchosen cluster's probability is spread over its tokens: calib (each token's share "
     "of the cluster's mass on the calibration text) or uniform (the paper)",
     0, 0, false, "calib|uniform"},
    {"cluster-source", nullptr, K::kChoice, "compress", "head", "ROWS",
     "--cluster-head: rows the vocabulary is clustered by: head (tokens whose head rows are alike get alike logits) "
     "or emb (the embedding rows, the paper's recipe; rarely seen tokens form one huge cluster the cap then splits)",
     0, 0, false, "head|emb"},
    {"prior-smoothing", nullptr, K::kFloat, "compress", "0.001", "A",
     "--cluster-head, calib priors: every token's calibration share gets A x its cluster's mean share added "
     "(tokens never seen in the calibration text keep some probability)",
     0, 1e6},
    {"ffn-dtype", nullptr, K::kChoice, "compress", "keep", "TYPE",
     "--sparse-ffn: matrix type of the bundled FFN (keep = that of ffn.key)", 0, 0, false, "keep|f32|f16|bf16|i8|q4"},
    {"calib-tokens", nullptr, K::kInt, "compress", "16384", "N", "use the first N tokens of the calibration text", 1,
     kBig},
    {"quant", nullptr, K::kChoice, "compress", nullptr, "TYPE",
     "quantise every block projection (and the factors; RWKV-7a: the DeepEmbed tables): int8 (per-row f16 scale) or "
     "int4 (groups of 32)",
     0, 0, false, "int8|int4"},
    {"deep-embed", nullptr, K::kSwitch, "compress", nullptr, "",
     "RWKV-7a, before the other passes: merge each layer's s_emb_x ln0(emb) into its DeepEmbed table (the reference "
     "code's merge at load, done once: a token then reads one table row per layer and no s_emb_x) and, with --calib, "
     "record the most frequent calibration tokens, whose rows the runtime pins in its DeepEmbed cache"},
    {"de-hot", nullptr, K::kInt, "compress", "1024", "N", "--deep-embed: hot tokens recorded at most", 0, 1 << 24},
    {"quant-emb", nullptr, K::kSwitch, "compress", nullptr, "", "also quantise the embedding (with --quant)"},
    {"quant-head", nullptr, K::kSwitch, "compress", nullptr, "", "also quantise the head (with --quant)"},
    {"dtype", nullptr, K::kChoice, "compress", "keep", "TYPE",
     "type of the factors and other matrices that are not quantised (keep: factors f32 for f32 models, else f16)", 0, 0,
     false, "keep|f32|f16|bf16"},
    {"threads", "t", K::kInt, "compress", "0", "N", "worker threads; 0 = one per core", 0, 4096},
    {"tokenizer", nullptr, K::kString, "compress", nullptr, "PATH", "tokenizer file for the calibration text"},
    {"json", nullptr, K::kSwitch, "compress", nullptr, "", "print the report as one JSON object"},
    {"resume", nullptr, K::kSwitch, "compress", nullptr, "",
     "continue an interrupted run from the last finished layer (its journal OUT.journal; the same model, recipe "
     "and calibration); the file is the same as an uninterrupted run's"},

    // -- stats
    {"model", "m", K::kString, "stats", nullptr, "FILE", "model file"},
    {"text", nullptr, K::kString, "stats", nullptr, "FILE", "text fed as one stream from a fresh state"},
    {"max-tokens", nullptr, K::kInt, "stats", "20000", "N", "use only the first N tokens (0 = all)", 0, kBig},
    {"threads", "t", K::kInt, "stats", "0", "N", "worker threads; 0 = one per core", 0, 4096},
    {"chunk", nullptr, K::kInt, "stats", "64", "N", "tokens per sequence-mode chunk (at most 1024)", 1, 1024},
    {"tokenizer", nullptr, K::kString, "stats", nullptr, "PATH", "tokenizer file"},
    {"json", nullptr, K::kSwitch, "stats", nullptr, "", "print one JSON object instead of the table"},
    {"out", "o", K::kString, "stats", nullptr, "FILE", "also write the JSON report to FILE"},
    {"plot", nullptr, K::kString, "stats bench", nullptr, "FILE.svg",
     "draw with gnuplot: stats the per-layer sparsity; bench --budgets tokens/s against the budget"},

    // -- tokenize
    {"tokenizer-kind", nullptr, K::kChoice, "tokenize", nullptr, "KIND",
     "use this tokenizer instead of the model's (with --tokenizer PATH unless byte)", 0, 0, false, "world|neox|byte"},

    // -- verify
    {"model", "m", K::kString, "verify", nullptr, "FILE", "model file to check (any format the runtime reads)"},
    {"json", nullptr, K::kSwitch, "verify", nullptr, "", "print the report as one JSON object"},
};

const std::vector<CommandSpec> kCommands = {
    {"generate", "-m MODEL (-p PROMPT | -f FILE) [-n N] [options]", "generate text from a prompt",
     "Feeds the prompt in sequence mode, then samples N tokens, streaming the text to stdout as it is "
     "produced (only the continuation is printed). Timing goes to stderr at the end.",
     "rwkv-lite generate -m model.pth -p \"The Eiffel tower is in\" -n 64 --temp 0.8 --top-p 0.9",
     cmd_generate},
    {"chat", "-m MODEL [--system TEXT] [options]", "chat in the terminal (RWKV World chat format)",
     "Reads one message per line and streams the model's reply (User: ... / Assistant: ..., the reply ends at an "
     "empty line). Sampling defaults are RWKV's for chat: temperature 1.0, top-p 0.3, presence and frequency "
     "penalties 0.5 decaying by 0.996 per token, end-of-text never sampled. Commands: /save FILE and /load FILE (the "
     "conversation's state), /reset, /regen (another reply to the last message), /quit.",
     "rwkv-lite chat -m model.pth --system \"You are a helpful assistant.\"", cmd_chat},
    {"serve", "-m MODEL [--port N] [-np N] [options]", "OpenAI-compatible HTTP server",
     "POST /v1/completions and /v1/chat/completions (stream: true as server-sent events), GET /v1/models, /health, "
     "/metrics; POST /tokenize, /detokenize. Slots share one loaded model; prompts resume from cached prefix "
     "states. Stops cleanly on SIGINT/SIGTERM. See docs/SERVER.md.",
     "rwkv-lite serve -m model.pth --port 8080 -np 4 --state-cache 128M", cmd_serve},
    {"eval", "-m MODEL --text FILE [--lambada FILE] [options]",
     "perplexity, bits per byte and LAMBADA accuracy, with model size, memory and speed",
     "Perplexity and bits per byte over the text file fed as one stream from a fresh state; LAMBADA accuracy and "
     "perplexity with lm-eval's lambada_openai protocol (each passage from a fresh state); the model file size, "
     "the bytes of weights held, peak RSS, tokens/s and the time taken. The figures compression is judged by.",
     "rwkv-lite eval -m model.pth --text wikitext2-test.txt --max-tokens 20000 --lambada lambada_openai_test.jsonl",
     cmd_eval},
    {"perplexity", "-m MODEL -f TEXT_FILE [options]", "perplexity of a model on a text file",
     "Feeds the whole file as one stream from a fresh state and prints exp(mean negative log-likelihood) of "
     "every token after the first.",
     "rwkv-lite perplexity -m model.pth -f wikitext2-test.txt --max-tokens 20000", cmd_perplexity},
    {"bench", "-m MODEL [options]", "measure prompt and generation speed against the memory-bandwidth bound",
     "Feeds seeded random tokens: a prompt in sequence mode, then tokens one at a time with logits. Reports "
     "tokens/s, peak RSS, weight bytes read per token, the achieved and the measured memory bandwidth.",
     "rwkv-lite bench -m model.pth -t 4 --json", cmd_bench},
    {"logits", "-m MODEL (--tokens IDS | --text TEXT) -o FILE [options]", "write the logits after some tokens",
     "Feeds the tokens from a fresh state and writes the final logits as n_vocab little-endian float32 values.",
     "rwkv-lite logits -m tiny.bin --tokens 34,105,110 -o logits.bin", cmd_logits},
    {"compress", "-m IN -o OUT [--lowrank svd|asvd --rank-frac F] [--quant int8|int4] [options]",
     "shrink a model: low-rank factors and quantisation",
     "Factors the target projections by truncated SVD (svd) or activation-aware SVD calibrated on text, layer by "
     "layer with each layer's inputs taken from the already-compressed layers before it (asvd), and/or quantises "
     "the block projections to int8 or int4. Writes a native file; the passes are recorded in it.",
     "rwkv-lite compress -m model.pth -o model-r4.rwkvl --lowrank asvd --rank-frac 0.25 --calib wikitext2-valid.txt "
     "--quant int8",
     cmd_compress},
    {"stats", "-m MODEL --text FILE [--json] [--out FILE] [--plot FILE.svg]", "FFN activation sparsity per layer",
     "Feeds the text from a fresh state and measures, per layer, the share of channel-mix neurons that are exactly "
     "zero for each token (mean and percentiles), how many neurons carry 90% / 99% of all activations, and how many "
     "are never active: the room a sparse FFN has.",
     "rwkv-lite stats -m model.pth --text wikitext2-test.txt --plot sparsity.svg", cmd_stats},
    {"convert", "-m IN -o OUT [--dtype TYPE]", "convert a model to the native format",
     "Loads any supported file and writes it in the native rwkv-lite format, optionally changing the matrix type.",
     "rwkv-lite convert -m model.pth -o model-f16.rwkvl --dtype f16", cmd_convert},
    {"synth", "-o OUT [--arch V --layers N --embd N --vocab N ...]", "make a model with random weights",
     "Writes a native model of the given shape with seeded random weights (for benchmarks and tests).",
     "rwkv-lite synth -o synth.rwkvl --arch 7 --layers 2 --embd 128 --vocab 1024", cmd_synth},
    {"info", "-m MODEL [--json]", "describe a model file", "", "rwkv-lite info -m model.pth", cmd_info},
    {"tokenize", "(-m MODEL | --tokenizer-kind KIND [--tokenizer PATH]) (-p TEXT | -f FILE)", "print token ids",
     "Prints the ids of the text, comma-separated on one line (the format --tokens of 'logits' reads).",
     "rwkv-lite tokenize -m model.pth -p \"Hello world\"", cmd_tokenize},
    {"verify", "-m MODEL [--json]", "check a model file for corruption",
     "Reads every byte of the file: each tensor's FNV-1a checksum against the one in the header (native files; "
     "other formats have none), every float value finite (also int8 scales and the scales of q4/q5_1 blocks), and "
     "every header field in range (the model is bound as for loading). Prints one line per tensor and a summary; "
     "exits 1 when anything is wrong, 0 otherwise.",
     "rwkv-lite verify -m model.rwkvl", cmd_verify},
};

bool listed(const char* commands, const std::string& command) {
  if (std::strcmp(commands, "*") == 0) return true;
  std::istringstream in(commands);
  std::string word;
  while (in >> word) {
    if (word == command) return true;
  }
  return false;
}

const FlagSpec* lookup(const std::string& command, const std::string& name, bool is_short) {
  for (const auto& f : kFlags) {
    const char* n = is_short ? f.short_name : f.name;
    if (n && name == n && listed(f.commands, command)) return &f;
  }
  return nullptr;
}

bool exists_anywhere(const std::string& name, bool is_short) {
  for (const auto& f : kFlags) {
    const char* n = is_short ? f.short_name : f.name;
    if (n && name == n) return true;
  }
  return false;
}

std::string display_name(const FlagSpec& f) { return std::string("--") + f.name; }

std::string format_number(double v) {
  if (v == std::floor(v) && std::fabs(v) < 1e15) return std::to_string(static_cast<long long>(v));
  std::ostringstream s;
  s << v;
  return s.str();
}

bool parse_int(const std::string& s, int64_t* out) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) return false;
  errno = 0;
  char* end = nullptr;
  const long long v = std::strtoll(s.c_str(), &end, 10);
  if (errno != 0 || end == s.c_str() || *end != '\0') return false;
  *out = v;
  return true;
}

bool parse_float(const std::string& s, double* out) {
  if (s.empty() || std::isspace(static_cast<unsigned char>(s[0]))) return false;
  errno = 0;
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (errno == ERANGE || end == s.c_str() || *end != '\0' || !std::isfinite(v)) return false;
  *out = v;
  return true;
}

// Checks a value against its row; returns "" or the problem.
std::string check_value(const FlagSpec& f, const std::string& value) {
  double v = 0.0;
  if (f.kind == K::kInt) {
    int64_t i = 0;
    if (!parse_int(value, &i)) return "invalid value '" + value + "' for " + display_name(f) + ": expected an integer";
    v = static_cast<double>(i);
  } else if (f.kind == K::kFloat) {
    if (!parse_float(value, &v)) return "invalid value '" + value + "' for " + display_name(f) + ": expected a number";
  } else if (f.kind == K::kChoice) {
    std::istringstream in(std::string(f.choices));
    std::string c;
    while (std::getline(in, c, '|')) {
      if (c == value) return "";
    }
    return "invalid value '" + value + "' for " + display_name(f) + ": expected one of " + f.choices;
  } else {
    return "";
  }
  const bool below = f.lo_open ? !(v > f.lo) : !(v >= f.lo);
  if (below || !(v <= f.hi)) {
    return display_name(f) + " must be in " + (f.lo_open ? "(" : "[") + format_number(f.lo) + ", " +
           format_number(f.hi) + "] (got " + value + ")";
  }
  return "";
}

// Prints text wrapped at `width` columns, every line after the first indented by `indent` spaces.
void print_wrapped(std::FILE* out, const std::string& text, size_t indent, size_t first_col, size_t width = 100) {
  std::istringstream in(text);
  std::string word;
  size_t col = first_col;
  bool line_start = true;
  while (in >> word) {
    if (!line_start && col + 1 + word.size() > width) {
      std::fprintf(out, "\n%*s", static_cast<int>(indent), "");
      col = indent;
      line_start = true;
    }
    if (!line_start) {
      std::fputc(' ', out);
      ++col;
    }
    std::fputs(word.c_str(), out);
    col += word.size();
    line_start = false;
  }
  std::fputc('\n', out);
}

std::string hint(const std::string& command) {
  return command.empty() ? "(see 'rwkv-lite --help')" : "(see 'rwkv-lite " + command + " --help')";
}

}  // namespace

const std::vector<FlagSpec>& flag_table() { return kFlags; }
const std::vector<CommandSpec>& command_table() { return kCommands; }

const CommandSpec* find_command(const std::string& name) {
  for (const auto& c : kCommands) {
    if (name == c.name) return &c;
  }
  return nullptr;
}

void Args::fail(const std::string& what) const { throw UsageError(what + " " + hint(command_)); }

Args Args::parse(const CommandSpec& command, int argc, char** argv, int first) {
  Args a;
  a.command_ = command.name;
  for (int i = first; i < argc; ++i) {
    const std::string tok = argv[i];
    std::string name, value;
    bool has_value = false, is_short = false;
    if (tok.size() > 2 && tok.compare(0, 2, "--") == 0) {
      name = tok.substr(2);
      const size_t eq = name.find('=');
      if (eq != std::string::npos) {
        value = name.substr(eq + 1);
        name.resize(eq);
        has_value = true;
      }
    } else if (tok.size() >= 2 && tok[0] == '-' && tok[1] != '-' && !std::isdigit(static_cast<unsigned char>(tok[1]))) {
      // Short names: one letter (-m), and llama.cpp's -np.
      name = tok.substr(1);
      is_short = true;
    } else {
      a.fail("unexpected argument '" + tok + "'");
    }
    const FlagSpec* f = lookup(a.command_, name, is_short);
    if (!f) {
      if (exists_anywhere(name, is_short)) a.fail("option '" + tok + "' does not apply to '" + a.command_ + "'");
      a.fail("unknown option '" + (has_value ? tok.substr(0, tok.find('=')) : tok) + "'");
    }
    if (f->kind == K::kSwitch) {
      if (has_value) a.fail("option '" + display_name(*f) + "' takes no value");
      a.values_[f->name] = std::string(1, '1');  // (not = "1": GCC 12 -Wrestrict false positive)
      continue;
    }
    if (!has_value) {
      if (i + 1 >= argc) a.fail("option '" + tok + "' needs a value (" + f->metavar + ")");
      value = argv[++i];
    }
    const std::string problem = check_value(*f, value);
    if (!problem.empty()) a.fail(problem);
    a.values_[f->name] = value;
  }
  return a;
}

const FlagSpec& Args::spec(const char* name) const {
  const FlagSpec* f = lookup(command_, name, false);
  if (!f) throw std::logic_error(std::string("flag --") + name + " is not declared for '" + command_ + "'");
  return *f;
}

bool Args::accepts(const char* name) const { return lookup(command_, name, false) != nullptr; }

bool Args::given(const char* name) const {
  spec(name);
  return values_.count(name) != 0;
}

bool Args::on(const char* name) const { return given(name); }

std::string Args::str(const char* name) const {
  const FlagSpec& f = spec(name);
  auto it = values_.find(name);
  if (it != values_.end()) return it->second;
  return f.def ? f.def : "";
}

int64_t Args::integer(const char* name) const {
  const std::string s = str(name);
  int64_t v = 0;
  if (!parse_int(s, &v)) throw std::logic_error("--" + std::string(name) + " has no integer value");
  return v;
}

double Args::number(const char* name) const {
  const std::string s = str(name);
  double v = 0;
  if (!parse_float(s, &v)) throw std::logic_error("--" + std::string(name) + " has no numeric value");
  return v;
}

void print_global_help(std::FILE* out) {
  std::fprintf(out, "rwkv-lite %s - RWKV language models on the CPU\n\n", RWKVL_VERSION_STRING);
  std::fprintf(out, "usage: rwkv-lite COMMAND [options]\n       rwkv-lite COMMAND --help\n\ncommands:\n");
  for (const auto& c : kCommands) std::fprintf(out, "  %-12s %s\n", c.name, c.summary);
  std::fprintf(out, "\noptions:\n  %-26s %s\n  %-26s %s\n", "-h, --help", "show this help and exit", "--version",
               "print the version and build information");
}

void print_command_help(std::FILE* out, const CommandSpec& c) {
  std::fprintf(out, "usage: rwkv-lite %s %s\n\n", c.name, c.synopsis);
  std::string about = std::string(c.summary) + ".";
  about[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(about[0])));
  if (*c.details) about += std::string(" ") + c.details;
  print_wrapped(out, about, 0, 0);
  std::fprintf(out, "\noptions:\n");
  for (const auto& f : kFlags) {
    if (!listed(f.commands, c.name) || lookup(c.name, f.name, false) != &f) continue;
    std::string left = f.short_name ? std::string("-") + f.short_name + ", " : std::string("    ");
    left += std::string("--") + f.name;
    if (f.kind == K::kChoice) left += std::string(" ") + f.choices;
    else if (f.kind != K::kSwitch) left += std::string(" ") + f.metavar;
    std::string right = f.help;
    if (f.def && f.kind != K::kSwitch) right += std::string(" (default: ") + f.def + ")";
    if (left.size() <= 28) {
      std::fprintf(out, "  %-28s ", left.c_str());
    } else {
      std::fprintf(out, "  %s\n  %-28s ", left.c_str(), "");
    }
    print_wrapped(out, right, 31, 31);
  }
  std::fprintf(out, "\nexample:\n  %s\n", c.example);
}

}  // namespace rwkvl::cli
