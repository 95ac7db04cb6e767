#!/usr/bin/env bash
# Speculative decoding on stories260K, every draft kind x draft length, greedy, against the target
# alone in the same run: tau (mean accepted length), acceptance per position, target passes per
# token, and wall-clock speedup. Several prompts, 200 tokens each; the tool's --stats-json gives
# the figures. Usage: bench/run_spec_bench.sh [BUILD_DIR]
set -euo pipefail
BUILD_DIR=${1:-build}
OUT=${OUT:-bench/results}
BIN="$BUILD_DIR/bin/tandem-model"
MODELS=${TANDEM_MODELS_DIR:-$(cd "$(dirname "$0")/.." && pwd)/../shared/models}
TARGET="$MODELS/stories260K.bin"
WORK=$(mktemp -d /tmp/tandem-spec.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$OUT"
"$BIN" convert "$TARGET" "$WORK/q8_0.gguf" --type q8_0 2>/dev/null
"$BIN" convert "$TARGET" "$WORK/q4_0.gguf" --type q4_0 2>/dev/null

PROMPTS=("" "Once upon a time" "The little dog" "Tom and Sue went to the park" "Lily had a red ball")
REPEAT=${REPEAT:-5}

run() {  # name, extra flags...
  local name=$1; shift
  local i=0
  for p in "${PROMPTS[@]}"; do
    for r in $(seq "$REPEAT"); do
      "$BIN" generate --model "$TARGET" --prompt "$p" --max-tokens 200 "$@" \
        --stats-json "$WORK/$name.$i.$r.json" >/dev/null 2>&1
    done
    i=$((i + 1))
  done
}

run target
for g in 1 2 3 4 6; do
  run "ngram3.g$g" --draft ngram:3 --spec-tokens "$g"
  for k in 1 2 3 4; do run "ee$k.g$g" --draft "early-exit:$k" --spec-tokens "$g"; done
  run "q8.g$g" --draft-model "$WORK/q8_0.gguf" --spec-tokens "$g"
  run "q4.g$g" --draft-model "$WORK/q4_0.gguf" --spec-tokens "$g"
done
run "q8.auto" --draft-model "$WORK/q8_0.gguf" --spec-tokens auto
run "ee4.auto" --draft early-exit:4 --spec-tokens auto
run "ngram3.auto" --draft ngram:3 --spec-tokens auto
run "q4.static23" --draft-model "$WORK/q4_0.gguf" --tree static:2,3
run "q4.dyn12" --draft-model "$WORK/q4_0.gguf" --tree dynamic:12
run "ee4.static23" --draft early-exit:4 --tree static:2,3
run "ee4.dyn12" --draft early-exit:4 --tree dynamic:12

python3 - "$WORK" "$OUT" <<'PY'
import glob, json, os, sys, statistics
work, out = sys.argv[1], sys.argv[2]
def load(name):
    return [json.load(open(f)) for f in sorted(glob.glob(os.path.join(work, name + ".*.json")))]
base = load("target")
base_tps = statistics.median(j["tokens_per_second"] for j in base)
base_tokens = sum(j["generated_tokens"] for j in base)
rows = []
labels = {"ngram3": "ngram:3", "ee1": "early-exit:1", "ee2": "early-exit:2", "ee3": "early-exit:3",
          "ee4": "early-exit:4", "q8": "q8_0 model", "q4": "q4_0 model"}
for key, label in labels.items():
    for g in [1, 2, 3, 4, 6]:
        js = load(f"{key}.g{g}")
        tokens = sum(j["generated_tokens"] for j in js)
        passes = sum(j["target_forward_passes"] for j in js)
        accepted = sum(j["accepted_tokens"] for j in js)
        per_pos = [statistics.mean(j["acceptance_per_position"][i] for j in js if len(j["acceptance_per_position"]) > i) for i in range(g)]
        tps = statistics.median(j["tokens_per_second"] for j in js)
        rows.append({"draft": label, "spec_tokens": g, "tau": (accepted + passes) / passes,
                     "acceptance_per_position": [round(x, 4) for x in per_pos],
                     "target_passes_per_token": passes / tokens, "tokens_per_second": tps,
                     "speedup_vs_target_alone": tps / base_tps, "same_tokens_as_target": tokens == base_tokens})
extra = {"q8.auto": ("q8_0 model", "auto"), "ee4.auto": ("early-exit:4", "auto"),
         "ngram3.auto": ("ngram:3", "auto"), "q4.static23": ("q4_0 model", "tree static:2,3"),
         "q4.dyn12": ("q4_0 model", "tree dynamic:12"), "ee4.static23": ("early-exit:4", "tree static:2,3"),
         "ee4.dyn12": ("early-exit:4", "tree dynamic:12")}
for key, (label, how) in extra.items():
    js = load(key)
    tokens = sum(j["generated_tokens"] for j in js)
    passes = sum(j["target_forward_passes"] for j in js)
    accepted = sum(j["accepted_tokens"] for j in js)
    depth = max(len(j["acceptance_per_position"]) for j in js)
    per_pos = [statistics.mean(j["acceptance_per_position"][i] for j in js if len(j["acceptance_per_position"]) > i) for i in range(depth)]
    tps = statistics.median(j["tokens_per_second"] for j in js)
    rows.append({"draft": label, "spec_tokens": how, "tau": (accepted + passes) / passes,
                 "acceptance_per_position": [round(x, 4) for x in per_pos],
                 "target_passes_per_token": passes / tokens, "tokens_per_second": tps,
                 "speedup_vs_target_alone": tps / base_tps, "same_tokens_as_target": tokens == base_tokens})
res = {"target": "stories260K.bin", "greedy": True, "prompts": 5, "max_tokens": 200,
       "target_alone_tokens_per_second": base_tps, "runs": rows}
json.dump(res, open(os.path.join(out, "spec-stories260K.json"), "w"), indent=2)
print(f"target alone: {base_tps:.0f} tok/s")
print(f"{'draft':14} {'G':>2} {'tau':>5} {'passes/tok':>10} {'speedup':>8}  acceptance per position")
for r in rows:
    print(f"{r['draft']:14} {str(r['spec_tokens']):>2} {r['tau']:5.2f} {r['target_passes_per_token']:10.3f} {r['speedup_vs_target_alone']:8.2f}  {r['acceptance_per_position']}")
PY
