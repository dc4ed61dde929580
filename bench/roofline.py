#!/usr/bin/env python3
"""Generation tokens/s against the weight bytes each token touches, with the memory-bandwidth bound as a line
(issue #17 item 5).

Runs `rwkv-lite bench --json` on each model `--runs` times (alternating the models), keeps each model's best
generation speed and the bytes its tokens touched (bytes_touched_per_token: what the cluster head, sparse FFN
and embedding actually read), and draws, log-log, one point per model and the bound tokens/s = bandwidth /
bytes for the lowest and the highest read bandwidth the runs measured (the machine's bandwidth moves from run to
run). Writes FILE.csv beside the plot and prints a table (each model's share of the bound of its own best run).
Needs gnuplot for the SVG (Debian gnuplot-nox); without it only the table and CSV are written.

usage: roofline.py -o PLOT.svg|PLOT.png [--rwkv-lite BIN] [-t 2] [-n 128] [--runs 3] [--title T] LABEL=MODEL ...
"""
import argparse
import json
import os
import shutil
import subprocess
import sys


def die(msg):
    print("roofline: " + msg, file=sys.stderr)
    sys.exit(1)


def bench(rl, model, a):
    cmd = [rl, "bench", "-m", model, "-t", str(a.threads), "-n", str(a.gen), "-p", "16", "--json"]
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        die("%s failed: %s" % (" ".join(cmd), p.stderr.strip()[-1000:]))
    return json.loads([l for l in p.stdout.splitlines() if l.startswith("{")][-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("models", nargs="+", help="LABEL=MODEL (e.g. f16=model-f16.rwkvl)")
    ap.add_argument("-o", "--out", required=True, help="the plot to write: FILE.svg, or FILE.png (FILE.csv is written beside it)")
    ap.add_argument("--rwkv-lite", dest="rl", default=None, help="rwkv-lite binary (default: build/rwkv-lite, PATH)")
    ap.add_argument("-t", "--threads", type=int, default=2)
    ap.add_argument("-n", "--gen", type=int, default=128, help="generated tokens per run")
    ap.add_argument("--runs", type=int, default=3, help="runs per model, alternating (best kept)")
    ap.add_argument("--title", default="generation speed against bytes touched per token")
    a = ap.parse_args()
    rl = a.rl or next((c for c in (os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "build", "rwkv-lite"),
                                   shutil.which("rwkv-lite")) if c and os.access(c, os.X_OK)), None)
    if not rl:
        die("rwkv-lite not found: pass --rwkv-lite")
    models = []
    for m in a.models:
        label, sep, path = m.partition("=")
        if not sep or not label or not os.path.isfile(path):
            die("expected LABEL=MODEL with an existing file, got '%s'" % m)
        models.append((label, path))
    if a.runs < 1 or a.gen < 1 or a.threads < 1:
        die("--runs, -n and -t must be >= 1")
    best, bws = {}, []
    for r in range(a.runs):
        for label, path in models:
            j = bench(rl, path, a)
            if j.get("measured_gb_per_s"):
                bws.append(j["measured_gb_per_s"])
            if label not in best or j["gen_tok_per_s"] > best[label]["gen_tok_per_s"]:
                best[label] = j
            print("run %d/%d %-14s %8.1f tok/s  %7.2f MiB/token  bound %s GB/s" % (
                r + 1, a.runs, label, j["gen_tok_per_s"], j["bytes_touched_per_token"] / 2**20,
                "%.1f" % j["measured_gb_per_s"] if j.get("measured_gb_per_s") else "-"), file=sys.stderr)
    base = os.path.splitext(a.out)[0]
    csv = base + ".csv"
    with open(csv, "w") as f:
        f.write("label,model,weight_dtype,bytes_touched_per_token,gen_tok_per_s,achieved_gb_per_s,measured_gb_per_s,"
                "bandwidth_pct\n")
        for label, path in models:
            j = best[label]
            f.write("%s,%s,%s,%.0f,%.3f,%.3f,%s,%s\n" % (
                label, os.path.basename(path), j["weight_dtype"], j["bytes_touched_per_token"], j["gen_tok_per_s"],
                j["achieved_gb_per_s"], j.get("measured_gb_per_s") or "", j.get("bandwidth_pct") or ""))
    print("| model | dtype | MiB touched / token | best tok/s | achieved GB/s | bound GB/s (that run) | % of bound |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for label, _ in models:
        j = best[label]
        print("| %s | %s | %.2f | %.1f | %.1f | %s | %s |" % (
            label, j["weight_dtype"], j["bytes_touched_per_token"] / 2**20, j["gen_tok_per_s"], j["achieved_gb_per_s"],
            "%.1f" % j["measured_gb_per_s"] if j.get("measured_gb_per_s") else "-",
            "%.0f" % j["bandwidth_pct"] if j.get("bandwidth_pct") else "-"))
    if bws:
        print("read bandwidth measured by the runs: %.1f-%.1f GB/s" % (min(bws), max(bws)))
    if not shutil.which("gnuplot"):
        print("roofline: gnuplot not found; wrote %s only" % csv, file=sys.stderr)
        return
    lo, hi = (min(bws), max(bws)) if bws else (None, None)
    pts = [(best[l]["bytes_touched_per_token"] / 2**20, best[l]["gen_tok_per_s"], l) for l, _ in models]
    xs = [p[0] for p in pts]
    xmin, xmax = min(xs) / 2, max(xs) * 2
    dat = base + ".dat"
    with open(dat, "w") as f:
        for x, y, l in pts:
            f.write('%.6f %.3f "%s"\n' % (x, y, l))
    term = "pngcairo size 760,520 font 'sans,10'" if a.out.endswith(".png") else "svg size 760,520 font 'sans,12'"
    gp = ["set terminal " + term, "set output '%s'" % a.out, "set logscale xy",
          "set xlabel 'weight bytes touched per generated token (MiB)'", "set ylabel 'generation tokens/s'",
          "set title '%s'" % a.title.replace("'", ""), "set grid", "set key top right",
          "set xrange [%g:%g]" % (xmin, xmax)]
    plots = []
    if lo:
        # tokens/s = GB/s * 1e9 / (MiB * 2^20)
        plots.append("%g*1e9/(x*1048576) with lines lw 2 lc rgb '#c03030' title 'bound at %.1f GB/s (highest measured)'" % (hi, hi))
        if hi / lo > 1.05:
            plots.append("%g*1e9/(x*1048576) with lines lw 1 dt 2 lc rgb '#c03030' title 'bound at %.1f GB/s (lowest measured)'" % (lo, lo))
    plots.append("'%s' using 1:2 with points pt 7 ps 1.2 lc rgb '#2060b0' title 'rwkv-lite, best of %d runs'" % (dat, a.runs))
    plots.append("'%s' using 1:2:3 with labels offset 1.2,0.6 left notitle" % dat)
    gp.append("plot " + ", ".join(plots))
    p = subprocess.run(["gnuplot"], input="\n".join(gp) + "\n", text=True, stderr=subprocess.PIPE)
    if p.returncode != 0:
        die("gnuplot failed: " + p.stderr)
    os.remove(dat)
    print("wrote %s and %s" % (a.out, csv), file=sys.stderr)


if __name__ == "__main__":
    main()
