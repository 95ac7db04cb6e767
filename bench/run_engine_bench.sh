#!/usr/bin/env bash
# Engine speed on a synthetic 110M-parameter llama (dim 768, hidden 2048, 12 layers, 12 heads,
# vocab 32000) in F32, F16, Q8_0 and Q4_0: decode tokens/s at batch 1 against the machine's
# memory-bandwidth bound, the cost of a forward pass over T = 1..16 positions relative to T = 1,
# and prefill speed. Writes one JSON file per type plus a summary to $OUT (default
# bench/results). Usage: bench/run_engine_bench.sh [BUILD_DIR] [THREADS] [SECONDS]
set -euo pipefail
BUILD_DIR=${1:-build}
THREADS=${2:-$(nproc)}
SECONDS_PER_PHASE=${3:-3}
OUT=${OUT:-bench/results}
BIN="$BUILD_DIR/bin/tandem-model"
WORK=${BENCH_WORK:-$(mktemp -d /tmp/tandem-bench.XXXXXX)}
mkdir -p "$OUT" "$WORK"

for type in f32 f16 q8_0 q4_0; do
  model="$WORK/synthetic-110m-$type.gguf"
  if [ ! -f "$model" ]; then
    "$BIN" synth "$model" --dim 768 --hidden 2048 --layers 12 --heads 12 --kv-heads 12 \
      --vocab 32000 --seq-len 1024 --type "$type" --seed 110
  fi
  "$BIN" bench --model "$model" --json "$OUT/engine-110m-$type.json" --threads "$THREADS" \
    --seconds "$SECONDS_PER_PHASE" 2>/dev/null
done

python3 - "$OUT" <<'PY'
import json, sys, os
out = sys.argv[1]
rows = []
for t in ["f32", "f16", "q8_0", "q4_0"]:
    j = json.load(open(os.path.join(out, f"engine-110m-{t}.json")))
    cost = {c["positions"]: c["relative_to_1"] for c in j["forward_cost"]}
    rows.append({"type": t, "decode_tps": j["decode_tokens_per_second"],
                 "bound_tps": j["bandwidth_bound_tokens_per_second"],
                 "fraction_of_bound": j["decode_fraction_of_bound"],
                 "cost_T5_over_T1": cost.get(5), "cost_T16_over_T1": cost.get(16),
                 "prefill_tps": j["prefill_tokens_per_second"],
                 "bandwidth_GBps": j["memory_read_bandwidth_bytes_per_second"] / 1e9,
                 "threads": j["threads"], "simd": j["simd"]})
json.dump(rows, open(os.path.join(out, "engine-110m-summary.json"), "w"), indent=2)
print(f"{'type':6} {'decode t/s':>10} {'bound t/s':>10} {'of bound':>9} {'T5/T1':>6} {'T16/T1':>7} {'prefill t/s':>11}")
for r in rows:
    print(f"{r['type']:6} {r['decode_tps']:10.1f} {r['bound_tps']:10.1f} {r['fraction_of_bound']:9.1%} "
          f"{r['cost_T5_over_T1']:6.2f} {r['cost_T16_over_T1']:7.2f} {r['prefill_tps']:11.1f}")
PY
