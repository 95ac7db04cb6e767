#!/usr/bin/env bash
# The loopback fleet, for a demo: three tandem-verifier replicas (stories260K) behind HAProxy with
# deploy/haproxy/tandem.cfg. See deploy/README.md.
#
#   deploy/run_fleet.sh start [DIR]    start the replicas and HAProxy; returns once HAProxy sees the
#                                      three replicas up. Addresses in DIR/fleet.env, logs in DIR.
#   deploy/run_fleet.sh status [DIR]   each replica's open and ended sessions, HAProxy's view
#   deploy/run_fleet.sh drain N [DIR]  SIGTERM replica N (1-3): it hands its sessions back and exits
#   deploy/run_fleet.sh stop [DIR]     stop the replicas (they drain), then HAProxy
#
# DIR: default /tmp/tandem-fleet. Environment: BUILD_DIR (default build), MODELS_DIR (default
# ../shared/models beside the checkout), TANDEM_LB_LISTEN (default 127.0.0.1:50050, where edges
# connect), TANDEM_LB_STATS_LISTEN (default 127.0.0.1:8404: HAProxy's /stats and /metrics).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$ROOT/build}
MODELS_DIR=${MODELS_DIR:-$ROOT/../shared/models}
export TANDEM_LB_LISTEN=${TANDEM_LB_LISTEN:-127.0.0.1:50050}
export TANDEM_LB_STATS_LISTEN=${TANDEM_LB_STATS_LISTEN:-127.0.0.1:8404}
REPLICAS=3

die() {
  echo "run_fleet: $*" >&2
  exit 1
}

# Whether the process in pid file $1 runs.
running() { [ -f "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }

# Waits up to $2 seconds for the process in pid file $1 to exit.
wait_gone() {
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    running "$1" || return 0
    sleep 0.1
  done
  return 1
}

start() {
  local dir=$1 i port metrics
  command -v haproxy >/dev/null || die "haproxy is not installed (bash tools/install_deps.sh)"
  [ -x "$BUILD_DIR/bin/tandem-verifier" ] || die "no $BUILD_DIR/bin/tandem-verifier (make build)"
  [ -f "$MODELS_DIR/stories260K.bin" ] || die "no $MODELS_DIR/stories260K.bin (set MODELS_DIR)"
  mkdir -p "$dir"
  running "$dir/haproxy.pid" && die "a fleet already runs from $dir (run_fleet.sh stop $dir)"
  # Whatever fails from here on stops what was started.
  trap 'stop "$dir" >/dev/null' EXIT
  : >"$dir/fleet.env"
  for ((i = 1; i <= REPLICAS; i++)); do
    rm -f "$dir/verifier$i.ports"
    nohup "$BUILD_DIR/bin/tandem-verifier" --model "$MODELS_DIR/stories260K.bin" \
      --tokenizer "$MODELS_DIR/tok512.bin" --name stories260K --listen 127.0.0.1:0 \
      --metrics-listen 127.0.0.1:0 --port-file "$dir/verifier$i.ports" \
      >"$dir/verifier$i.log" 2>&1 </dev/null &
    echo $! >"$dir/verifier$i.pid"
  done
  for ((i = 1; i <= REPLICAS; i++)); do
    local n
    for ((n = 0; n < 300; n++)); do
      [ -s "$dir/verifier$i.ports" ] && break
      running "$dir/verifier$i.pid" || die "replica $i did not start: $(cat "$dir/verifier$i.log")"
      sleep 0.1
    done
    { read -r port && read -r metrics; } <"$dir/verifier$i.ports" || die "replica $i: no ports"
    export "TANDEM_VERIFIER_$i=127.0.0.1:$port" "TANDEM_VERIFIER_${i}_METRICS=127.0.0.1:$metrics"
    echo "TANDEM_VERIFIER_$i=127.0.0.1:$port" >>"$dir/fleet.env"
    echo "TANDEM_VERIFIER_${i}_METRICS=127.0.0.1:$metrics" >>"$dir/fleet.env"
  done
  echo "TANDEM_LB_LISTEN=$TANDEM_LB_LISTEN" >>"$dir/fleet.env"
  echo "TANDEM_LB_STATS_LISTEN=$TANDEM_LB_STATS_LISTEN" >>"$dir/fleet.env"
  nohup haproxy -db -f "$ROOT/deploy/haproxy/tandem.cfg" >"$dir/haproxy.log" 2>&1 </dev/null &
  echo $! >"$dir/haproxy.pid"
  local csv up
  for ((n = 0; n < 100; n++)); do
    running "$dir/haproxy.pid" || die "haproxy did not start: $(cat "$dir/haproxy.log")"
    csv=$(curl -fsS "http://$TANDEM_LB_STATS_LISTEN/stats;csv" 2>/dev/null || true)
    up=$(grep -c '^tandem_verifiers,verifier[0-9]*,.*,UP,' <<<"$csv" || true)
    [ "$up" = "$REPLICAS" ] && break
    sleep 0.1
  done
  [ "$up" = "$REPLICAS" ] || die "HAProxy does not see the replicas up (see $dir/haproxy.log)"
  trap - EXIT
  echo "fleet up: edges connect to $TANDEM_LB_LISTEN; HAProxy stats at" \
    "http://$TANDEM_LB_STATS_LISTEN/stats; addresses in $dir/fleet.env"
}

status() {
  local dir=$1 i metrics
  [ -f "$dir/fleet.env" ] || die "no fleet in $dir"
  for ((i = 1; i <= REPLICAS; i++)); do
    metrics=$(sed -n "s/^TANDEM_VERIFIER_${i}_METRICS=//p" "$dir/fleet.env")
    if running "$dir/verifier$i.pid"; then
      echo "replica $i: $(curl -fsS "http://$metrics/metrics" | awk '
        /^tandem_serving / { serving = "serving=" $2 }
        /^tandem_sessions_active / { active = "active=" $2 }
        /^tandem_sessions_total\{/ && $2 > 0 {
          match($0, /outcome="[a-z_]+"/); ended = ended " " substr($0, RSTART + 9, RLENGTH - 10) "=" $2
        }
        END { print serving, active, "ended:" (ended == "" ? " none" : ended) }')"
    else
      echo "replica $i: stopped"
    fi
  done
  local stats
  stats=$(sed -n "s/^TANDEM_LB_STATS_LISTEN=//p" "$dir/fleet.env")
  echo "HAProxy (server, status, current sessions, total sessions):"
  curl -fsS "http://$stats/stats;csv" | awk -F, '$1 == "tandem_verifiers" { print "  " $2, $18, $5, $8 }'
}

drain() {
  local i=$1 dir=$2
  [[ "$i" =~ ^[1-3]$ ]] || die "drain: replica 1, 2 or 3, not '$i'"
  running "$dir/verifier$i.pid" || die "replica $i does not run"
  kill -TERM "$(cat "$dir/verifier$i.pid")"
  wait_gone "$dir/verifier$i.pid" 30 || die "replica $i did not exit within 30 s"
  grep -E 'draining|handing back|outcome=handed_back' "$dir/verifier$i.log" || true
  echo "replica $i drained and stopped"
}

stop() {
  local dir=$1 i
  for ((i = 1; i <= REPLICAS; i++)); do
    running "$dir/verifier$i.pid" && kill -TERM "$(cat "$dir/verifier$i.pid")"
  done
  for ((i = 1; i <= REPLICAS; i++)); do
    wait_gone "$dir/verifier$i.pid" 30 || kill -KILL "$(cat "$dir/verifier$i.pid")" 2>/dev/null || true
    rm -f "$dir/verifier$i.pid"
  done
  if running "$dir/haproxy.pid"; then
    kill -USR1 "$(cat "$dir/haproxy.pid")"  # soft stop: finish what runs, then exit
    wait_gone "$dir/haproxy.pid" 10 || kill -TERM "$(cat "$dir/haproxy.pid")" 2>/dev/null || true
  fi
  rm -f "$dir/haproxy.pid"
  echo "fleet stopped (logs in $dir)"
}

cmd=${1:-}
case "$cmd" in
  start | status | stop) start_dir=${2:-/tmp/tandem-fleet}; "$cmd" "$start_dir" ;;
  drain) [ $# -ge 2 ] || die "usage: run_fleet.sh drain N [DIR]"; drain "$2" "${3:-/tmp/tandem-fleet}" ;;
  *) sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; exit 2 ;;
esac
