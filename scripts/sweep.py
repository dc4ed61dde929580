#!/usr/bin/env python3
"""Accuracy against memory for a grid of `rwkv-lite compress` settings on one model.

--grid combined: every technique in one file (low-rank + int8 + sparse FFN + cluster head) run under several
runtime settings (embedding cache, memory budgets of 100/50/25/15 % of the fp16 bytes): one eval line per
configuration with the planned resident weight bytes, peak RSS, bytes read from the file per token, tokens/s,
perplexity and LAMBADA; writes OUT/combined.csv and OUT/combined.md.

For every setting: compress the model (or use it as it is), run `rwkv-lite eval --json` on a text
(perplexity, bits per byte) and LAMBADA, and collect file size, resident weight bytes, peak RSS and
speed. Writes OUT/sweep.csv, OUT/sweep.md (a Markdown table), and OUT/sweep.svg (gnuplot: perplexity
and LAMBADA target perplexity against file size, Pareto front marked) when gnuplot is installed.

    scripts/sweep.py -m ../shared/reference/models/rwkv5-world-l8-d256/model.pth -o sweep-out

Standard library only (runs with any python3 >= 3.8); gnuplot (Debian: gnuplot-nox) draws the plot.
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")

# (name, compress arguments or None for the model as it is). Calibration arguments are added to asvd,
# --sparse-ffn and --cluster-head.
# Every technique at once: asvd rank 1/4 + int8 everywhere (embedding and head too) + sparse FFN + cluster head.
ALL = ["--lowrank", "asvd", "--rank-frac", "0.25", "--quant", "int8", "--quant-emb", "--quant-head", "--sparse-ffn",
       "--cluster-head", "200"]
# Under a budget: chunks of 8 tokens and no full head beside the cluster head (it would stream 100 % of the head
# rows for the agreement figures); the embedding cache is on (4096 rows) whenever a budget is.
# Speed is that of the configuration alone: eval's comparison with the full head is off everywhere.
NOCMP = ["--no-head-compare"]
BUDGET = ["--chunk", "8", "--no-head-compare", "--mem-budget"]
GRIDS = {
    "full": [("original", None), ("int8", ["--quant", "int8"]), ("int4", ["--quant", "int4"])]
    # Rank 1/2 of a square matrix saves no bytes (2 x n/2 x n = n^2): --force keeps those factors so
    # that svd and asvd can still be compared there.
    + [(f"{m} r1/{d}", ["--lowrank", m, "--rank-frac", str(1 / d)] + (["--force"] if d == 2 else []))
       for d in (2, 4, 8) for m in ("svd", "asvd")]
    + [(f"{m} r1/{d} int8", ["--lowrank", m, "--rank-frac", str(1 / d), "--quant", "int8"])
       for d in (4, 8) for m in ("svd", "asvd")]
    + [("asvd r1/4 +diag", ["--lowrank", "asvd", "--rank-frac", "0.25", "--diag"]),
       ("int8 all +emb +head", ["--quant", "int8", "--quant-emb", "--quant-head"]),
       ("asvd budget 70M (all targets)", ["--lowrank", "asvd", "--budget", "70M", "--targets", "all"]),
       ("asvd r1/8 int8 +emb +head", ["--lowrank", "asvd", "--rank-frac", "0.125", "--quant", "int8", "--quant-emb",
                                      "--quant-head"]),
       ("int4 all +emb +head", ["--quant", "int4", "--quant-emb", "--quant-head"])],
    # (name, compress arguments, eval arguments): one compressed file, several ways of running it.
    "combined": [("original", None, NOCMP),
                 ("cluster head", ["--cluster-head", "200"], NOCMP),
                 ("cluster head, budget 25%", ["--cluster-head", "200"], BUDGET + ["25%"]),
                 ("all", ALL, NOCMP),
                 ("all + emb cache 4096", ALL, NOCMP + ["--emb-cache", "4096"]),
                 ("all, budget 100%", ALL, BUDGET + ["100%"]),
                 ("all, budget 50%", ALL, BUDGET + ["50%"]),
                 ("all, budget 25%", ALL, BUDGET + ["25%"]),
                 ("all, budget 15%", ALL, BUDGET + ["15%"])],
    "quick": [("original", None), ("int8", ["--quant", "int8"]),
              ("svd r1/4", ["--lowrank", "svd", "--rank-frac", "0.25"]),
              ("asvd r1/4", ["--lowrank", "asvd", "--rank-frac", "0.25"])],
}

FIELDS = ["name", "args", "eval_args", "file_bytes", "weight_bytes", "mem_budget", "mem_resident_weight_bytes",
          "mem_planned_stream_bytes_per_token", "peak_rss_bytes", "ppl", "bpb", "tokens", "lambada_acc", "lambada_ppl",
          "lambada_n", "tok_per_s", "head_rows_frac", "emb_cache_hit_rate", "ffn_active_frac", "compress_s",
          "pareto_ppl", "error"]


def run(cmd, may_fail=False):
    """stdout of cmd; on failure exits, or with may_fail returns (None, last line of stderr)."""
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        if may_fail:
            return None, (p.stderr.strip().splitlines() or [""])[-1]
        sys.exit(f"sweep: command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr.strip()}")
    return (p.stdout, "") if may_fail else p.stdout


def pareto(rows, key, better_low=True):
    """Marks rows on the front: no other row is both smaller (file bytes) and better (key)."""
    front = []
    for r in rows:
        dominated = False
        for o in rows:
            if o is r:
                continue
            smaller = o["file_bytes"] <= r["file_bytes"]
            better = o[key] <= r[key] if better_low else o[key] >= r[key]
            strictly = o["file_bytes"] < r["file_bytes"] or (o[key] < r[key] if better_low else o[key] > r[key])
            if smaller and better and strictly:
                dominated = True
                break
        front.append(not dominated)
    return front


def plot(out_dir, rows):
    gp = shutil.which("gnuplot")
    if not gp:
        print("sweep: gnuplot not found, no plot (Debian: apt-get install gnuplot-nox)", file=sys.stderr)
        return None
    data = os.path.join(out_dir, "sweep.dat")
    with open(data, "w") as f:
        for i, r in enumerate(rows):
            lp = r["lambada_ppl"] if r.get("lambada_ppl") is not None else float("nan")
            f.write(f'{r["file_bytes"] / 2**20:.3f} {r["ppl"]:.4f} {lp:.4f} "{r["name"]}" {i}\n')
    def front_file(key, low):
        path = os.path.join(out_dir, f"front_{key}.dat")
        sel = [r for r, on in zip(rows, pareto(rows, key, low)) if on]
        sel.sort(key=lambda r: r["file_bytes"])
        with open(path, "w") as f:
            for r in sel:
                f.write(f'{r["file_bytes"] / 2**20:.3f} {r[key]:.4f}\n')
        return path
    fp = front_file("ppl", True)
    # LAMBADA target perplexity, not accuracy, is plotted: small models (like the reference model)
    # score near 0% accuracy, where the accuracy axis shows nothing; the table has both.
    have_acc = all(r.get("lambada_ppl") is not None for r in rows)
    fa = front_file("lambada_ppl", True) if have_acc else None
    svg = os.path.join(out_dir, "sweep.svg")
    script = f"""
set terminal svg size 1200,520 font "sans,11" background "white"
set output "{svg}"
set multiplot layout 1,{2 if have_acc else 1} title "{rows[0]['model']}: accuracy against file size"
set grid
set key top right
set xlabel "file size (MiB)"
set ylabel "WikiText-2 perplexity ({rows[0]['tokens']} tokens, lower is better)"
plot "{data}" using 1:2 with points pt 7 ps 0.8 lc rgb "#4477aa" title "settings", \\
     "{fp}" using 1:2 with linespoints pt 6 ps 1.6 lw 2 lc rgb "#cc3311" title "Pareto front", \\
     "{data}" using 1:2:4 with labels font "sans,8" offset 0.6,0.5 left rotate by 20 notitle
"""
    if have_acc:
        script += f"""
set ylabel "LAMBADA target perplexity (lower is better, log scale)"
set logscale y
set key top right
plot "{data}" using 1:3 with points pt 7 ps 0.8 lc rgb "#4477aa" title "settings", \\
     "{fa}" using 1:2 with linespoints pt 6 ps 1.6 lw 2 lc rgb "#cc3311" title "Pareto front", \\
     "{data}" using 1:3:4 with labels font "sans,8" offset 0.6,0.5 left rotate by 20 notitle
"""
    script += "unset multiplot\n"
    gp_path = os.path.join(out_dir, "sweep.gp")
    with open(gp_path, "w") as f:
        f.write(script)
    subprocess.run([gp, gp_path], check=True)
    return svg


def mib(v):
    return f"{v / 2**20:.2f}" if v is not None else "-"


def write_combined(out_dir, rows):
    with open(os.path.join(out_dir, "combined.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    base = rows[0]
    with open(os.path.join(out_dir, "combined.md"), "w") as f:
        f.write("| configuration | file MiB | budget MiB | resident weights MiB | peak RSS MiB | read/token MiB (plan) | "
                "tok/s | ppl | Δppl | LAMBADA acc | LAMBADA ppl | head rows | emb hit | FFN neurons |\n")
        f.write("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
        for r in rows:
            if r["error"]:
                f.write(f"| {r['name']} | | | | | | | | | | | | | refused: {r['error'].replace('|', '/')} |\n")
                continue
            budget = r.get("mem_budget")
            # Without a budget every weight is mapped (resident once touched): the weight bytes.
            resident = r.get("mem_resident_weight_bytes") if budget else r["weight_bytes"]
            opt = lambda k, fmt: format(r[k], fmt) if r.get(k) is not None else "-"
            f.write(f"| {r['name']} | {mib(r['file_bytes'])} | {mib(budget)} | {mib(resident)} | "
                    f"{mib(r['peak_rss_bytes'])} | {mib(r.get('mem_planned_stream_bytes_per_token'))} | "
                    f"{r['tok_per_s']:.0f} | {r['ppl']:.3f} | {100 * (r['ppl'] / base['ppl'] - 1):+.2f}% | "
                    f"{opt('lambada_acc', '.4f')} | {opt('lambada_ppl', '.1f')} | {opt('head_rows_frac', '.3f')} | "
                    f"{opt('emb_cache_hit_rate', '.3f')} | {opt('ffn_active_frac', '.3f')} |\n")
    print(f"wrote {out_dir}/combined.csv, combined.md", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-o", "--out", required=True, help="output folder (compressed models, csv, md, svg)")
    ap.add_argument("--cli", default=os.path.join(ROOT, "build", "rwkv-lite"))
    ap.add_argument("--text", default=os.path.join(SHARED, "data", "wikitext2-test.txt"))
    ap.add_argument("--max-tokens", type=int, default=None, help="test tokens per setting (default 20000; combined 5000)")
    ap.add_argument("--lambada", default=os.path.join(SHARED, "data", "lambada_openai_test.jsonl"))
    ap.add_argument("--lambada-max", type=int, default=None,
                    help="LAMBADA passages per setting (0 = all 5,153; default 1000; combined 500)")
    ap.add_argument("--calib", default=os.path.join(SHARED, "data", "wikitext2-valid.txt"))
    ap.add_argument("--calib-tokens", type=int, default=16384)
    ap.add_argument("--grid", choices=sorted(GRIDS), default="full")
    ap.add_argument("-t", "--threads", type=int, default=0)
    ap.add_argument("--keep-models", action="store_true", help="keep the compressed model files")
    a = ap.parse_args()
    if a.max_tokens is None:
        a.max_tokens = 5000 if a.grid == "combined" else 20000
    if a.lambada_max is None:
        a.lambada_max = 500 if a.grid == "combined" else 1000
    if not os.access(a.cli, os.X_OK):
        sys.exit(f"sweep: {a.cli} is not an executable (build first, or pass --cli)")
    os.makedirs(a.out, exist_ok=True)

    rows = []
    files = {}  # compress arguments -> (model file, seconds): a file made once serves every eval setting
    grid = [e if len(e) == 3 else (e[0], e[1], []) for e in GRIDS[a.grid]]
    for i, (name, args, eval_args) in enumerate(grid):
        model, compress_s = a.model, 0.0
        if args is not None:
            key = tuple(args)
            if key not in files:
                path = os.path.join(a.out, name.split(",")[0].replace(" ", "_").replace("/", "-").replace("+", "") +
                                    ".rwkvl")
                calib = any(x in args for x in ("asvd", "--sparse-ffn", "--cluster-head"))
                extra = ["--calib", a.calib, "--calib-tokens", str(a.calib_tokens)] if calib else []
                t0 = time.time()
                run([a.cli, "compress", "-m", a.model, "-o", path, "-t", str(a.threads)] + args + extra)
                files[key] = (path, time.time() - t0)
            model, compress_s = files[key]
        ev = [a.cli, "eval", "-m", model, "--text", a.text, "--max-tokens", str(a.max_tokens), "--json", "-t",
              str(a.threads)] + eval_args
        if a.lambada:
            ev += ["--lambada", a.lambada, "--lambada-max", str(a.lambada_max)]
        out, err = run(ev, may_fail=True)
        j = json.loads(out) if out else {}
        row = {k: j.get(k) for k in FIELDS if k in j}
        row.update(name=name, args=" ".join(args or []), eval_args=" ".join(eval_args), compress_s=round(compress_s, 1),
                   model=os.path.basename(a.model), error=err)
        rows.append(row)
        if err:
            print(f"{name:28s} refused: {err}", file=sys.stderr, flush=True)
        else:
            print(f"{name:28s} file {row['file_bytes'] / 2**20:8.2f} MiB  peak RSS {row['peak_rss_bytes'] / 2**20:7.2f} MiB"
                  f"  ppl {row['ppl']:9.3f}  lambada {row['lambada_acc']}", file=sys.stderr, flush=True)
        # Remove a compressed file after its last use.
        if args is not None and not a.keep_models and all(tuple(e[1] or []) != tuple(args) for e in grid[i + 1:]):
            os.remove(model)

    if a.grid == "combined":
        write_combined(a.out, rows)
        return
    rows = [r for r in rows if not r["error"]]
    for r, on in zip(rows, pareto(rows, "ppl", True)):
        r["pareto_ppl"] = int(on)
    with open(os.path.join(a.out, "sweep.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    base = rows[0]
    with open(os.path.join(a.out, "sweep.md"), "w") as f:
        f.write("| setting | file MiB | weights MiB | peak RSS MiB | ppl | Δppl | bpb | LAMBADA acc | LAMBADA ppl | tok/s | front |\n")
        f.write("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | :-: |\n")
        for r in rows:
            acc = f"{r['lambada_acc']:.4f}" if r.get("lambada_acc") is not None else "-"
            lppl = f"{r['lambada_ppl']:.1f}" if r.get("lambada_ppl") is not None else "-"
            f.write(f"| {r['name']} | {r['file_bytes'] / 2**20:.2f} | {r['weight_bytes'] / 2**20:.2f} | "
                    f"{r['peak_rss_bytes'] / 2**20:.0f} | {r['ppl']:.3f} | {100 * (r['ppl'] / base['ppl'] - 1):+.2f}% | "
                    f"{r['bpb']:.4f} | {acc} | {lppl} | {r['tok_per_s']:.0f} | {'*' if r['pareto_ppl'] else ''} |\n")
    svg = plot(a.out, rows)
    print(f"wrote {a.out}/sweep.csv, sweep.md" + (f", {svg}" if svg else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
