#!/usr/bin/env python3
"""rwkv-lite and rwkv.cpp side by side on the same weights (issue #17 item 4).

Given a model (any file rwkv-lite reads) and rwkv.cpp's harness (bench/peers/rwkvcpp_peer.c, built against an
rwkv.cpp library by build-rwkvcpp.sh), this converts the same weights for both sides at equal bits:

  pair        rwkv-lite file                                      rwkv.cpp file
  f32/FP32    convert --dtype f32                                 FP32 (rwkv.cpp's converter, or convert --format rwkvcpp)
  f16/FP16    convert --dtype f16                                 FP16 (likewise)
  int8/Q8_0   compress --quant int8 --dtype f16 (emb, head f16)   FP16 -> rwkv_quantize_model_file Q8_0 (emb, head stay FP16)
  int4/Q4_0   compress --quant int4 --dtype f16                   FP16 -> Q4_0
  int4/Q5_1   (the int4 file)                                     FP16 -> Q5_1

then times generation (one token at a time with logits) and prompt processing (sequence mode, the same chunk
size on both sides) in alternating runs, scores perplexity on the same token ids, and prints one table: each
side's tokens/s (min-max over the rounds), the ratio ours / rwkv.cpp of each round (min-max), perplexities and
file sizes. Only Python's standard library is needed.

usage: side_by_side.py --peer DIR_OR_BINARY -m MODEL [--text FILE] [-t 2] [-n 128] [-p 512] [--chunk 64]
                       [--rounds 3] [--pairs f32,f16,int8,int4,q5_1] [--work DIR] [--json OUT]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

PAIRS = {  # name -> (label, our file key, peer file key)
    "f32": ("f32 / FP32", "f32", "FP32"),
    "f16": ("f16 / FP16", "f16", "FP16"),
    "int8": ("int8 / Q8_0", "int8", "Q8_0"),
    "int4": ("int4 / Q4_0", "int4", "Q4_0"),
    "q5_1": ("int4 / Q5_1", "int4", "Q5_1"),
}


def die(msg):
    print("side_by_side: " + msg, file=sys.stderr)
    sys.exit(1)


def run(cmd, what):
    t0 = time.monotonic()
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        die("%s failed (exit %d): %s\n%s" % (what, p.returncode, " ".join(cmd), p.stderr.strip()[-2000:]))
    return p.stdout, time.monotonic() - t0


def run_json(cmd, what):
    out, _ = run(cmd, what)
    lines = [l for l in out.splitlines() if l.strip().startswith("{")]
    if not lines:
        die("%s printed no JSON: %s" % (what, out[-500:]))
    return json.loads(lines[-1])


def find_rwkv_lite(arg):
    if arg:
        return arg
    here = os.path.dirname(os.path.abspath(__file__))
    for c in (os.path.join(here, "..", "..", "build", "rwkv-lite"), shutil.which("rwkv-lite")):
        if c and os.access(c, os.X_OK):
            return os.path.abspath(c)
    die("rwkv-lite not found: build it (README) or pass --rwkv-lite PATH")


def find_peer(arg):
    p = os.path.join(arg, "rwkvcpp_peer") if os.path.isdir(arg) else arg
    if not os.access(p, os.X_OK):
        die("%s is not an executable rwkvcpp_peer (build it with bench/peers/build-rwkvcpp.sh)" % p)
    return os.path.abspath(p)


def make_files(a, rl, peer, work, pairs):
    """Converts the model for both sides; returns {key: path} for ours and the peer's."""
    ours, theirs = {}, {}
    need_ours = {PAIRS[p][1] for p in pairs}
    need_peer = {PAIRS[p][2] for p in pairs}
    for key in sorted(need_ours):
        out = os.path.join(work, "ours-%s.rwkvl" % key)
        if key in ("f32", "f16"):
            cmd = [rl, "convert", "-m", a.model, "-o", out, "--dtype", key]
        else:
            cmd = [rl, "compress", "-m", a.model, "-o", out, "--quant", key, "--dtype", "f16"]
        if not os.path.exists(out):
            run(cmd, "rwkv-lite " + cmd[1])
        ours[key] = out
    # the float files asked for, and FP16 whenever a quantised one is (rwkv.cpp quantises from it)
    floats = (need_peer & {"FP32", "FP16"}) | ({"FP16"} if need_peer - {"FP32", "FP16"} else set())
    for key in sorted(floats):
        out = os.path.join(work, "rwkvcpp-%s.bin" % key)
        if not os.path.exists(out):
            if a.rwkvcpp_converter:
                run([sys.executable, a.rwkvcpp_converter, a.model, out, key], "rwkv.cpp's converter")
            else:
                run([rl, "convert", "-m", a.model, "-o", out, "--format", "rwkvcpp", "--dtype", key.lower().replace("fp", "f")],
                    "rwkv-lite convert --format rwkvcpp")
        theirs[key] = out
    for key in sorted(need_peer - {"FP32", "FP16"}):
        out = os.path.join(work, "rwkvcpp-%s.bin" % key)
        if not os.path.exists(out):
            run([peer, "quantize", theirs["FP16"], out, key], "rwkv.cpp quantize")
        theirs[key] = out
    return ours, theirs


def bench_ours(a, rl, path):
    j = run_json([rl, "bench", "-m", path, "-t", str(a.threads), "-n", str(a.gen), "-p", str(a.prompt), "--chunk",
                  str(a.chunk), "-s", str(a.seed), "--no-bandwidth", "--json"], "rwkv-lite bench")
    return {"gen": j["gen_tok_per_s"], "prompt": j["prompt_tok_per_s"], "rss_mib": j["peak_rss_bytes"] / 2**20,
            "bytes_per_token": j.get("bytes_touched_per_token", j.get("bytes_per_token")), "system": j["system"]}


def bench_peer(a, peer, path):
    j = run_json([peer, "bench", path, str(a.threads), str(a.gen), str(a.prompt), str(a.chunk), str(a.seed)],
                 "rwkvcpp_peer bench")
    return {"gen": j["gen_tok_per_s"], "prompt": j["prompt_tok_per_s"], "rss_mib": j["peak_rss_mib"],
            "system": j["system"]}


def perplexities(a, rl, peer, work, ours, theirs, pairs):
    ids_path = os.path.join(work, "ids.txt")
    ids, _ = run([rl, "tokenize", "-m", a.model, "-f", a.text], "rwkv-lite tokenize")
    ids = ids.strip().split(",")[: a.ppl_tokens]
    if len(ids) < 2:
        die("%s gives fewer than 2 tokens" % a.text)
    with open(ids_path, "w") as f:
        f.write(",".join(ids) + "\n")
    # rwkv-lite scores the same ids: the text file cut to exactly those tokens is not needed, --max-tokens is.
    res = {}
    for key in sorted({PAIRS[p][1] for p in pairs}):
        j = run_json([rl, "perplexity", "-m", ours[key], "-f", a.text, "--max-tokens", str(len(ids)), "-t",
                      str(a.threads), "--json"], "rwkv-lite perplexity")
        res[("ours", key)] = (j["ppl"], j.get("tokens"))
    for key in sorted({PAIRS[p][2] for p in pairs}):
        j = run_json([peer, "ppl", theirs[key], ids_path, str(len(ids)), str(a.threads)], "rwkvcpp_peer ppl")
        res[("peer", key)] = (j["ppl"], j["tokens"])
    return res, len(ids)


def rng(vals, fmt="%.0f"):
    lo, hi = min(vals), max(vals)
    return (fmt % lo) if fmt % lo == fmt % hi else (fmt % lo) + "-" + (fmt % hi)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--peer", required=True, help="rwkvcpp_peer, or the folder build-rwkvcpp.sh wrote it to")
    ap.add_argument("-m", "--model", required=True, help="model file (.pth, safetensors, rwkv.cpp .bin, native)")
    ap.add_argument("--text", help="text for perplexity (e.g. WikiText-2 test); none: no perplexity column")
    ap.add_argument("--ppl-tokens", type=int, default=4000, help="tokens of --text scored (default 4000)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-n", "--gen", type=int, default=128, help="generated tokens per run (default 128)")
    ap.add_argument("-p", "--prompt", type=int, default=512, help="prompt tokens per run (default 512)")
    ap.add_argument("--chunk", type=int, default=64, help="sequence-mode chunk, both sides (default 64)")
    ap.add_argument("--rounds", type=int, default=3, help="alternating rounds (default 3)")
    ap.add_argument("-s", "--seed", type=int, default=1234, help="seed of the random token ids")
    ap.add_argument("--pairs", default="f32,f16,int8,int4,q5_1", help="of f32,f16,int8,int4,q5_1")
    ap.add_argument("--rwkv-lite", dest="rwkv_lite", help="rwkv-lite binary (default: build/rwkv-lite, PATH)")
    ap.add_argument("--rwkvcpp-converter", help="rwkv.cpp's python/convert_pytorch_to_ggml.py for a .pth model "
                    "(needs python3-torch); default: rwkv-lite convert --format rwkvcpp (the same tensors)")
    ap.add_argument("--work", help="folder for the converted files (kept, reused); default: a temporary one")
    ap.add_argument("--json", help="also write the results as JSON to this file")
    a = ap.parse_args()
    pairs = [p.strip() for p in a.pairs.split(",") if p.strip()]
    for p in pairs:
        if p not in PAIRS:
            die("unknown pair '%s' (pairs: %s)" % (p, ",".join(PAIRS)))
    if a.rounds < 1 or a.threads < 1 or a.gen < 1 or a.prompt < 1 or a.chunk < 1 or a.ppl_tokens < 2:
        die("--rounds, -t, -n, -p, --chunk must be >= 1 and --ppl-tokens >= 2")
    for f in [a.model] + ([a.text] if a.text else []):
        if not os.path.isfile(f):
            die("no such file: %s" % f)
    rl, peer = find_rwkv_lite(a.rwkv_lite), find_peer(a.peer)
    tmp = None
    work = a.work
    if not work:
        tmp = tempfile.mkdtemp(prefix="side_by_side.")
        work = tmp
    os.makedirs(work, exist_ok=True)
    try:
        report(a, rl, peer, work, pairs)
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)


def report(a, rl, peer, work, pairs):
    print("converting %s for both sides in %s ..." % (a.model, work), file=sys.stderr)
    ours, theirs = make_files(a, rl, peer, work, pairs)
    runs = {p: {"ours": [], "peer": []} for p in pairs}
    for r in range(a.rounds):
        for p in pairs:
            _, ok, pk = PAIRS[p]
            # alternate which side goes first, so neither always meets the warmer (or hotter) machine
            sides = [("ours", ok), ("peer", pk)] if r % 2 == 0 else [("peer", pk), ("ours", ok)]
            for side, key in sides:
                res = bench_ours(a, rl, ours[key]) if side == "ours" else bench_peer(a, peer, theirs[key])
                runs[p][side].append(res)
            print("round %d/%d %-12s ours gen %.1f prompt %.1f | rwkv.cpp gen %.1f prompt %.1f" % (
                r + 1, a.rounds, PAIRS[p][0], runs[p]["ours"][-1]["gen"], runs[p]["ours"][-1]["prompt"],
                runs[p]["peer"][-1]["gen"], runs[p]["peer"][-1]["prompt"]), file=sys.stderr)
    ppl, n_ids = perplexities(a, rl, peer, work, ours, theirs, pairs) if a.text else ({}, 0)

    system, peer_sys = runs[pairs[0]]["ours"][0]["system"], runs[pairs[0]]["peer"][0]["system"]
    print("\nrwkv-lite vs rwkv.cpp: %s, %d threads, generation %d tokens, prompt %d tokens (chunk %d), %d "
          "alternating rounds" % (os.path.basename(a.model), a.threads, a.gen, a.prompt, a.chunk, a.rounds))
    print("rwkv-lite: %s" % system)
    print("rwkv.cpp:  %s\n" % peer_sys.strip())
    head = ["pair", "gen tok/s ours", "gen tok/s rwkv.cpp", "gen ratio", "prompt tok/s ours", "prompt tok/s rwkv.cpp",
            "prompt ratio", "MiB ours", "MiB rwkv.cpp", "peak RSS MiB ours / rwkv.cpp"]
    if a.text:
        head += ["ppl ours", "ppl rwkv.cpp"]
    print("| " + " | ".join(head) + " |")
    print("|" + " --- |" * len(head))
    out = []
    for p in pairs:
        label, ok, pk = PAIRS[p]
        o, t = runs[p]["ours"], runs[p]["peer"]
        gr = [x["gen"] / y["gen"] for x, y in zip(o, t)]
        pr = [x["prompt"] / y["prompt"] for x, y in zip(o, t)]
        row = [label, rng([x["gen"] for x in o]), rng([x["gen"] for x in t]), rng(gr, "%.2fx"),
               rng([x["prompt"] for x in o]), rng([x["prompt"] for x in t]), rng(pr, "%.2fx"),
               "%.1f" % (os.path.getsize(ours[ok]) / 2**20), "%.1f" % (os.path.getsize(theirs[pk]) / 2**20),
               "%.0f / %.0f" % (max(x["rss_mib"] for x in o), max(x["rss_mib"] for x in t))]
        rec = {"pair": label, "ours": o, "rwkvcpp": t, "gen_ratio": gr, "prompt_ratio": pr,
               "file_bytes_ours": os.path.getsize(ours[ok]), "file_bytes_rwkvcpp": os.path.getsize(theirs[pk])}
        if a.text:
            row += ["%.3f" % ppl[("ours", ok)][0], "%.3f" % ppl[("peer", pk)][0]]
            rec["ppl_ours"], rec["ppl_rwkvcpp"] = ppl[("ours", ok)][0], ppl[("peer", pk)][0]
        print("| " + " | ".join(row) + " |")
        out.append(rec)
    if a.text:
        print("\nperplexity: the first %d tokens of %s (NLL of every token after the first)" % (n_ids, a.text))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"model": a.model, "threads": a.threads, "gen_tokens": a.gen, "prompt_tokens": a.prompt,
                       "chunk": a.chunk, "rounds": a.rounds, "rwkv_lite_system": system, "rwkvcpp_system": peer_sys,
                       "pairs": out}, f, indent=1)


if __name__ == "__main__":
    main()
