#!/usr/bin/env bash
# The end-to-end demo for this stage of Tandem: local generation with the default model
# (stories260K from ../shared/models), from the llama2.c checkpoint and from a GGUF copy
# quantized by our own converter, then local speculative decoding (the q8_0 copy drafts, the
# f32 model verifies), and the same across processes over gRPC with TLS and a bearer token:
# tandem-verifier serves the target, tandem-edge drafts on the "device" and gets its drafts
# verified remotely (spec mode) or lets the verifier decode (cloud mode); then the verifier's
# Prometheus metrics.
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
echo "== edge-cloud over gRPC with TLS and a bearer token =="
echo "(certificates minted here with openssl; the verifier serves the f32 model, the edge drafts"
echo " with its q8_0 copy and gets the drafts verified remotely)"
VBIN="$BUILD_DIR/bin/tandem-verifier"
EBIN="$BUILD_DIR/bin/tandem-edge"
PKI="$TMP/pki"
mkdir -p "$PKI"
(
  cd "$PKI"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
    -subj "/CN=Tandem demo CA" -keyout ca.key -out ca.pem
  openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=localhost" \
    -keyout server.key -out server.csr
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >server.ext
  openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 1 \
    -extfile server.ext -out server.pem
) >/dev/null 2>&1
echo "demo-app:$(openssl rand -hex 16)" >"$PKI/tokens"
cut -d: -f2 "$PKI/tokens" >"$PKI/token"
"$VBIN" --model "$MODELS/stories260K.bin" --listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 \
  --tls-cert "$PKI/server.pem" --tls-key "$PKI/server.key" --auth-tokens-file "$PKI/tokens" \
  --port-file "$TMP/port" 2>"$TMP/verifier.log" &
VPID=$!
trap 'kill $VPID 2>/dev/null || true; rm -rf "$TMP"' EXIT
for _ in $(seq 100); do [ -f "$TMP/port" ] && [ "$(wc -l <"$TMP/port")" -ge 2 ] && break; sleep 0.1; done
PORT=$(sed -n 1p "$TMP/port")
MPORT=$(sed -n 2p "$TMP/port")
EDGE=("$EBIN" generate --verifier "localhost:$PORT" --model "$MODELS/stories260K.bin"
  --tls-ca "$PKI/ca.pem" --auth-token-file "$PKI/token" --prompt "Once upon a time" --max-tokens 120)
echo "-- spec mode (the edge drafts 4 tokens a round) --"
"${EDGE[@]}" --mode spec --draft-model "$TMP/stories260K-q8_0.gguf" --spec-tokens 4 \
  --stats-json "$TMP/edge.json"
echo "-- split mode (the edge runs layers [0,2) itself and sends their f32 states, not the prompt) --"
"${EDGE[@]}" --mode split --split-layer 2 --draft early-exit:4 --stats-json "$TMP/split.json"
echo "-- cloud mode (the verifier decodes and streams) --"
"${EDGE[@]}" --mode cloud --stats-json "$TMP/cloud.json"
echo "-- a wrong token is refused, and the edge does not fall back to local --"
echo "not-the-token" >"$PKI/wrong"
if "${EDGE[@]}" --auth-token-file "$PKI/wrong" >/dev/null 2>"$TMP/wrong.err"; then
  echo "demo: the wrong token was accepted" >&2
  exit 1
fi
cat "$TMP/wrong.err"
echo "-- the verifier's metrics (Prometheus text, http://127.0.0.1:$MPORT/metrics), a selection --"
curl -s "http://127.0.0.1:$MPORT/metrics" | grep -E '^tandem_(verify_passes_total|spec_decode_num_(draft|accepted)_tokens_total|generated_tokens_total|sessions_(active|total)|rejections_total\{reason="unauthenticated"\})' || true
kill -TERM $VPID
wait $VPID || true
echo "-- verifier log --"
cat "$TMP/verifier.log"
echo "-- edge stats (spec mode) --"
cat "$TMP/edge.json"
echo
echo "== stats (from --stats-json): target alone, then speculative =="
cat "$TMP/stats.json"
cat "$TMP/spec.json"
