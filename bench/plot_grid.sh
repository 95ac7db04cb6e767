#!/usr/bin/env bash
# Plots a `tandem-bench grid` JSON: one PNG per model, tokens/s against uplink (log x) for
# cloud, spec (best gamma), split f32 (best k), split int8 (best k) and auto, a panel per RTT.
# Usage: bench/plot_grid.sh GRID.json [OUT_DIR]   (writes OUT_DIR/grid-MODEL.png; default: the
# JSON's directory). Needs python3 and gnuplot (tools/install_deps.sh --bench).
set -euo pipefail
JSON=${1:?usage: bench/plot_grid.sh GRID.json [OUT_DIR]}
OUT=${2:-$(dirname "$JSON")}
HERE=$(cd "$(dirname "$0")" && pwd)
if ! command -v gnuplot >/dev/null; then
  echo "plot_grid: gnuplot is missing: run tools/install_deps.sh --bench" >&2
  exit 1
fi
DATA=$(mktemp -d /tmp/tandem-plot.XXXXXX)
trap 'rm -rf "$DATA"' EXIT
mkdir -p "$OUT"

python3 - "$JSON" "$DATA" "$OUT" <<'PY'
import json, os, sys
grid = json.load(open(sys.argv[1]))
data, out = sys.argv[2], sys.argv[3]
families = ["cloud", "spec", "split f32", "split int8", "auto"]

def family(row):
    if row["mode"] == "split":
        return "split " + row["codec"]
    return row["mode"]

models = []
for row in grid["rows"]:
    if row["model"] not in models:
        models.append(row["model"])
for model in models:
    rows = [r for r in grid["rows"] if r["model"] == model and not r.get("error")]
    rtts = sorted({r["rtt_ms"] for r in rows})
    cells = {(c["rtt_ms"], c["uplink_kbps"]): c for c in grid["summary"] if c["model"] == model}
    good = sum(1 for c in cells.values() if c["auto_ratio"] >= 0.85)
    lines = [f'model_title = "{model}: tokens/s vs uplink, downlink {grid["downlink_kbps"] / 1000:g} Mbit/s; '
             f'auto >= 85% of the best fixed configuration in {good}/{len(cells)} cells"',
             'rtts = "' + " ".join(f"{r:g}" for r in rtts) + '"', f"panels = {len(rtts)}",
             f'out = "{os.path.join(out, "grid-" + model + ".png")}"']
    for rtt in rtts:
        ups = sorted({r["uplink_kbps"] for r in rows if r["rtt_ms"] == rtt})
        with open(os.path.join(data, f"{model}-rtt{rtt:g}.dat"), "w") as f:
            f.write("# uplink_mbps " + " ".join(x.replace(" ", "_") for x in families) + "\n")
            for up in ups:
                best = {}
                for r in rows:
                    if r["rtt_ms"] == rtt and r["uplink_kbps"] == up:
                        fam = family(r)
                        best[fam] = max(best.get(fam, 0), r["tokens_per_s"])
                f.write(f"{up / 1000:g} " + " ".join(f"{best[x]:.4g}" if x in best else "?" for x in families) + "\n")
        hits = [c for (rt, _), c in cells.items() if rt == rtt]
        ok = sum(1 for c in hits if c["auto_ratio"] >= 0.85)
        lines.append(f'panel_{rtt:g} = "RTT {rtt:g} ms, x: uplink Mbit/s (auto >= 85% of best in {ok}/{len(hits)})"')
    open(os.path.join(data, model + ".gp"), "w").write("\n".join(lines) + "\n")
open(os.path.join(data, "models"), "w").write("\n".join(models) + "\n")
PY

while read -r model; do
  gnuplot -e "datadir='$DATA'; model='$model'" "$HERE/plot_grid.gp"
  echo "plot_grid: wrote $OUT/grid-$model.png" >&2
done < "$DATA/models"
