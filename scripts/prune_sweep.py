#!/usr/bin/env python3
"""Accuracy against sparsity for the three pruning methods (issue #16): `rwkv-lite compress --prune` with magnitude,
Wanda and DSnoT at several unstructured sparsities and the 2:4 pattern, every projection (or --targets), calibrated on
WikiText-2 valid, perplexity on WikiText-2 test; the Wanda files are then quantised (`compress --quant int8`: the kept
values as int8, masked / 2:4 matrices stay sparse) and evaluated again. Writes OUT/prune.csv, OUT/prune.md (a Markdown table) and
OUT/prune.svg (gnuplot, when installed: perplexity against sparsity, one line per method).

    scripts/prune_sweep.py -m ../shared/reference/models/rwkv5-world-l8-d256/model.pth -o prune-out

Standard library only; gnuplot (Debian: gnuplot-nox) draws the plot.
"""
import argparse
import csv
import json
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(os.path.dirname(ROOT), "shared")
METHODS = ["magnitude", "wanda", "dsnot"]


def run(cmd):
    print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        sys.exit(f"prune_sweep: command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr.strip()}")
    return p.stdout


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--cli", default=os.path.join(ROOT, "build", "rwkv-lite"))
    ap.add_argument("--text", default=os.path.join(SHARED, "data", "wikitext2-test.txt"))
    ap.add_argument("--max-tokens", type=int, default=20000)
    ap.add_argument("--calib", default=os.path.join(SHARED, "data", "wikitext2-valid.txt"))
    ap.add_argument("--calib-tokens", type=int, default=16384)
    ap.add_argument("--sparsities", default="0.3,0.5,0.6,0.7")
    ap.add_argument("--patterns", default="2:4,4:8")
    ap.add_argument("--targets", default=None, help="--prune-targets (default: every projection)")
    ap.add_argument("-t", "--threads", type=int, default=0)
    ap.add_argument("--no-int8", action="store_true", help="skip the int8 step on the Wanda files")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)

    def evaluate(path):
        j = json.loads(run([a.cli, "eval", "-m", path, "--text", a.text, "--max-tokens", str(a.max_tokens), "--json",
                            "-t", str(a.threads)]))
        return j["ppl"]

    rows = [{"method": "dense", "setting": "0", "sparsity": 0.0, "ppl": evaluate(a.model), "file_bytes": os.path.getsize(a.model),
             "pruned_bytes": None, "stored_as": None, "seconds": 0.0, "int8_ppl": None, "int8_pruned_bytes": None,
             "int8_stored_as": None}]
    settings = [("--sparsity", s) for s in a.sparsities.split(",") if s] + [("--pattern", p) for p in a.patterns.split(",") if p]
    for flag, val in settings:
        for m in METHODS:
            out = os.path.join(a.out, f"{m}-{val.replace(':', 'of')}.rwkvl")
            cmd = [a.cli, "compress", "-m", a.model, "-o", out, "--prune", m, flag, val, "--json", "-t", str(a.threads)]
            if m != "magnitude":
                cmd += ["--calib", a.calib, "--calib-tokens", str(a.calib_tokens)]
            if a.targets:
                cmd += ["--prune-targets", a.targets]
            rep = json.loads(run(cmd))
            p = rep["prune"]
            row = {"method": m, "setting": val, "sparsity": p["zeros"] / p["weights"], "ppl": evaluate(out),
                   "file_bytes": os.path.getsize(out), "pruned_bytes": p["bytes_after"],
                   "stored_as": ",".join(sorted({x["dtype"] for x in p["matrices"]})),
                   "seconds": rep["stages"]["prune"], "int8_ppl": None, "int8_pruned_bytes": None, "int8_stored_as": None}
            if m == "wanda" and not a.no_int8:
                q = out + ".i8.rwkvl"
                qrep = json.loads(run([a.cli, "compress", "-m", out, "-o", q, "--quant", "int8", "--json", "-t", str(a.threads)]))
                names = {x["name"] + ".weight" for x in p["matrices"]}
                mats = [x for x in qrep["matrices"] if x["name"] in names]
                row["int8_ppl"] = evaluate(q)
                row["int8_pruned_bytes"] = sum(x["bytes_after"] for x in mats)
                row["int8_stored_as"] = ",".join(sorted({x["dtype"] for x in mats}))
                os.remove(q)
            rows.append(row)
            os.remove(out)
    with open(os.path.join(a.out, "prune.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    dense = rows[0]["ppl"]
    with open(os.path.join(a.out, "prune.md"), "w") as f:
        f.write("| setting | magnitude ppl | wanda ppl | dsnot ppl | pruned matrices (Wanda) | Wanda + int8 ppl | "
                "pruned matrices int8 |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
        f.write(f"| dense | {dense:.3f} | {dense:.3f} | {dense:.3f} | | | |\n")
        for flag, val in settings:
            by = {r["method"]: r for r in rows if r["setting"] == val}
            cells = " | ".join(f"{by[m]['ppl']:.3f} ({100 * (by[m]['ppl'] / dense - 1):+.1f}%)" for m in METHODS)
            name = f"{float(val) * 100:.0f} % unstructured" if flag == "--sparsity" else f"{val}"
            w = by["wanda"]
            i8 = (f"{w['int8_ppl']:.3f} | {w['int8_pruned_bytes'] / 2**20:.2f} MiB ({w['int8_stored_as']})"
                  if w["int8_ppl"] is not None else " | ")
            f.write(f"| {name} | {cells} | {w['pruned_bytes'] / 2**20:.2f} MiB ({w['stored_as']}) | {i8} |\n")
    gp = shutil.which("gnuplot")
    if gp:
        dat = os.path.join(a.out, "prune.dat")
        with open(dat, "w") as f:
            for m in METHODS:
                f.write(f"# {m}\n0 {dense}\n")
                for r in rows:
                    if r["method"] == m and ":" not in r["setting"]:
                        f.write(f"{r['sparsity']} {r['ppl']}\n")
                f.write("\n\n")
        svg = os.path.join(a.out, "prune.svg")
        script = f"""set terminal svg size 800,480 font "sans,11" background "white"
set output "{svg}"
set title "{os.path.basename(os.path.dirname(os.path.abspath(a.model)))}: perplexity against unstructured sparsity of every projection"
set grid
set key top left
set xlabel "share of projection weights removed"
set ylabel "WikiText-2 test perplexity ({a.max_tokens} tokens)"
plot "{dat}" index 0 using 1:2 with linespoints pt 7 lw 2 title "magnitude", \\
     "{dat}" index 1 using 1:2 with linespoints pt 5 lw 2 title "Wanda", \\
     "{dat}" index 2 using 1:2 with linespoints pt 9 lw 2 title "DSnoT"
"""
        gpf = os.path.join(a.out, "prune.gp")
        with open(gpf, "w") as f:
            f.write(script)
        subprocess.run([gp, gpf], check=True)
    print(f"wrote {a.out}/prune.csv, prune.md" + (", prune.svg" if gp else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
