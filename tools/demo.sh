#!/usr/bin/env bash
# The end-to-end demo for this stage of Tandem: local generation with the default model
# (stories260K from ../shared/models), from the llama2.c checkpoint and from a GGUF copy
# quantized by our own converter, then local speculative decoding (the q8_0 copy drafts, the
# f32 model verifies), and the same across processes over gRPC: tandem-verifier serves the target,
# tandem-edge drafts on the "device" and gets its drafts verified remotely.
set -euo pipefail
BUILD_DIR=${1:-build}
BIN="$BUILD_DIR/bin/tandem-model"
MODELS=${TANDEM_MODELS_DIR:-$(cd "$(dirname "$0")/.." && pwd)/../shared/models}
if [ ! -f "$MODELS/stories260K.bin" ]; then
  echo "demo: the default model $MODELS/stories260K.bin is missing." >&2
  echo "      Put stories260K.bin and tok512.bin (see shared/models/README.md) there," >&2
  echo "      or set TANDEM_MODELS_DIR=/dir/with/models." >&2
  exit 1
fi
export TANDEM_MODELS_DIR="$MODELS"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

echo "== model =="
"$BIN" info "$MODELS/stories260K.bin" | head -n 16
echo
echo "== greedy generation, stories260K.bin + tok512.bin =="
"$BIN" generate --prompt "Once upon a time" --max-tokens 120 --stats-json "$TMP/stats.json"
echo
echo "== sampled generation (temperature 0.8, top-p 0.9, seed 7) =="
"$BIN" generate --prompt "The little dog" --max-tokens 80 --temperature 0.8 --top-p 0.9 --seed 7
echo
echo "== the same model converted to GGUF q8_0 by tandem-model convert =="
"$BIN" convert "$MODELS/stories260K.bin" "$TMP/stories260K-q8_0.gguf" --type q8_0
"$BIN" generate --model "$TMP/stories260K-q8_0.gguf" --prompt "Once upon a time" --max-tokens 120
echo
echo "== speculative decoding: the q8_0 copy drafts 4 tokens, the f32 model verifies them in one pass =="
"$BIN" generate --prompt "Once upon a time" --max-tokens 120 \
  --draft-model "$TMP/stories260K-q8_0.gguf" --spec-tokens 4 --stats-json "$TMP/spec.json"
echo "(the same text as the first greedy run, the f32 model alone: greedy verification is exact)"
echo
echo "== edge-cloud: tandem-verifier serves the f32 model; tandem-edge drafts locally (q8_0 copy) =="
VBIN="$BUILD_DIR/bin/tandem-verifier"
EBIN="$BUILD_DIR/bin/tandem-edge"
"$VBIN" --model "$MODELS/stories260K.bin" --listen 127.0.0.1:0 --port-file "$TMP/port" \
  2>"$TMP/verifier.log" &
VPID=$!
trap 'kill $VPID 2>/dev/null || true; rm -rf "$TMP"' EXIT
for _ in $(seq 100); do [ -s "$TMP/port" ] && break; sleep 0.1; done
PORT=$(cat "$TMP/port")
"$EBIN" generate --verifier "127.0.0.1:$PORT" --model "$MODELS/stories260K.bin" \
  --draft-model "$TMP/stories260K-q8_0.gguf" --spec-tokens 4 --prompt "Once upon a time" \
  --max-tokens 120 --stats-json "$TMP/edge.json"
kill -TERM $VPID
wait $VPID || true
cat "$TMP/verifier.log"
cat "$TMP/edge.json"
echo
echo "== stats (from --stats-json): target alone, then speculative =="
cat "$TMP/stats.json"
cat "$TMP/spec.json"
