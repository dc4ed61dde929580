#!/usr/bin/env python3
"""Accuracy against latency target (issue #16): a file made with `compress --fidelities HIGH,int4` run under a memory
budget on simulated storage with the two single-fidelity plans (`--fidelity high`, `--fidelity int4`) and the elastic
plan at each `--latency-target`, alternating rounds; perplexity on WikiText-2 test, measured and predicted ms per token.
Writes OUT/fidelity.csv, OUT/fidelity.md (a Markdown table of ranges over the rounds) and OUT/fidelity.svg (gnuplot,
when installed: perplexity against measured ms per token, one panel per storage preset).

    scripts/fidelity_sweep.py -m m-fid.rwkvl -o fid-out --storage emmc:2000:10,9,8 --storage sd:1000:30,27,24

Each --storage is PRESET:TOKENS:TARGETS (targets in ms, compared with storage time + --compute-ms). A target that no
plan meets is recorded as failed (the CLI names the fastest plan's prediction). Standard library only; gnuplot
(Debian: gnuplot-nox) draws the plot.
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


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("-m", "--model", required=True)
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--cli", default=os.path.join(ROOT, "build", "rwkv-lite"))
    ap.add_argument("--text", default=os.path.join(SHARED, "data", "wikitext2-test.txt"))
    ap.add_argument("--storage", action="append", default=None, help="PRESET:TOKENS:T1,T2,... (repeatable)")
    ap.add_argument("--mem-budget", default="25%")
    ap.add_argument("--compute-ms", type=float, default=0.95)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("-t", "--threads", type=int, default=2)
    a = ap.parse_args()
    storages = a.storage or ["emmc:2000:10,9,8", "sd:1000:30,27,24"]
    os.makedirs(a.out, exist_ok=True)

    def evaluate(preset, tokens, extra):
        cmd = [a.cli, "eval", "-m", a.model, "--text", a.text, "--max-tokens", str(tokens), "--chunk", "1", "-t",
               str(a.threads), "--mem-budget", a.mem_budget, "--storage", preset, "--compute-ms", str(a.compute_ms),
               "--no-head-compare", "--json"] + extra
        print("+ " + " ".join(cmd), file=sys.stderr, flush=True)
        p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if p.returncode != 0:
            if "cannot be met" in p.stderr:
                return {"failed": p.stderr.strip().splitlines()[-1]}
            sys.exit(f"fidelity_sweep: command failed ({p.returncode}): {' '.join(cmd)}\n{p.stderr.strip()}")
        j = json.loads(p.stdout)
        pp = j["plan_prediction"]
        return {"ppl": j["ppl"], "ms_measured": 1e3 / j["tok_per_s"], "ms_predicted": pp["ms_per_token"],
                "io_ms_measured": 1e3 * j["io_seconds"] / max(1, j["predicted"]), "io_ms_predicted": pp["io_ms_per_token"],
                "int4_clusters": pp["head_clusters_low"], "resident_clusters": pp["head_clusters_resident"],
                "predicted_loss": pp["predicted_loss_nats"], "peak_rss_mib": j["peak_rss_bytes"] / 2**20}

    rows = []
    for rnd in range(a.rounds):
        for spec in storages:
            preset, tokens, targets = spec.split(":")
            plans = [("high", ["--fidelity", "high"]), ("int4", ["--fidelity", "int4"])]
            plans += [(f"target {t}", ["--latency-target", t]) for t in targets.split(",") if t]
            for name, extra in plans:
                r = {"round": rnd + 1, "storage": preset, "tokens": int(tokens), "plan": name}
                r.update(evaluate(preset, int(tokens), extra))
                rows.append(r)
    fields = ["round", "storage", "tokens", "plan", "ppl", "ms_measured", "ms_predicted", "io_ms_measured",
              "io_ms_predicted", "int4_clusters", "resident_clusters", "predicted_loss", "peak_rss_mib", "failed"]
    with open(os.path.join(a.out, "fidelity.csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        w.writerows(rows)

    def rng(vals, fmt):
        vals = [v for v in vals if v is not None]
        if not vals:
            return "-"
        lo, hi = fmt.format(min(vals)), fmt.format(max(vals))
        return lo if lo == hi else f"{lo}-{hi}"

    with open(os.path.join(a.out, "fidelity.md"), "w") as f:
        f.write("| storage | plan | int4 clusters | perplexity | measured ms / token | predicted ms / token |\n")
        f.write("| --- | --- | ---: | ---: | ---: | ---: |\n")
        for spec in storages:
            preset = spec.split(":")[0]
            names = []
            for r in rows:
                if r["storage"] == preset and r["plan"] not in names:
                    names.append(r["plan"])
            for name in names:
                rs = [r for r in rows if r["storage"] == preset and r["plan"] == name and "failed" not in r]
                if not rs:
                    f.write(f"| {preset} | {name} | | refused: no plan meets it | | |\n")
                    continue
                f.write(f"| {preset} | {name} | {rng([r['int4_clusters'] for r in rs], '{:d}')} | "
                        f"{rng([r['ppl'] for r in rs], '{:.3f}')} | {rng([r['ms_measured'] for r in rs], '{:.2f}')} | "
                        f"{rng([r['ms_predicted'] for r in rs], '{:.2f}')} |\n")
    gp = shutil.which("gnuplot")
    if gp:
        dat = os.path.join(a.out, "fidelity.dat")
        blocks = []
        with open(dat, "w") as f:
            for spec in storages:
                preset = spec.split(":")[0]
                for kind in ("single", "elastic"):
                    f.write(f"# {preset} {kind}\n")
                    for r in rows:
                        if r["storage"] == preset and "failed" not in r and (r["plan"].startswith("target")) == (kind == "elastic"):
                            f.write(f"{r['ms_measured']:.3f} {r['ppl']:.4f} \"{r['plan']}\"\n")
                    f.write("\n\n")
                    blocks.append((preset, kind))
        svg = os.path.join(a.out, "fidelity.svg")
        lines = [f'set terminal svg size {480 * len(storages)},480 font "sans,11" background "white"', f'set output "{svg}"',
                 f"set multiplot layout 1,{len(storages)} title \"perplexity against measured time per token, budget "
                 f"{a.mem_budget} (single fidelity: int8 / int4 head; elastic: --latency-target)\"", "set grid",
                 "set key below", 'set xlabel "measured ms per token"', 'set ylabel "WikiText-2 test perplexity"']
        for i, spec in enumerate(storages):
            preset = spec.split(":")[0]
            s, e = blocks.index((preset, "single")), blocks.index((preset, "elastic"))
            lines.append(f'set title "{preset}"')
            lines.append(f'plot "{dat}" index {s} using 1:2 with points pt 7 ps 1.2 title "single fidelity", '
                         f'"{dat}" index {s} using 1:2:3 with labels offset 0,1 notitle, '
                         f'"{dat}" index {e} using 1:2 with points pt 5 ps 1.2 title "elastic (by importance)", '
                         f'"{dat}" index {e} using 1:2:3 with labels offset 0,-1 font ",9" notitle')
        lines.append("unset multiplot")
        gpf = os.path.join(a.out, "fidelity.gp")
        with open(gpf, "w") as f:
            f.write("\n".join(lines) + "\n")
        subprocess.run([gp, gpf], check=True)
    print(f"wrote {a.out}/fidelity.csv, fidelity.md" + (", fidelity.svg" if gp else ""), file=sys.stderr)


if __name__ == "__main__":
    main()
