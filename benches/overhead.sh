#!/usr/bin/env bash
# Prediction throughput with a feature on vs off: `bash benches/overhead.sh --no-monitoring` (the monitor: every
# prediction observed into a 200-row window, evaluated every 5 s) or `--no-request-metrics` (the request series).
# `vane demo --no-traffic` (breast_cancer from Git with its reference data) under wrk on loopback, batch-1 JSON
# requests at 64 connections. Runs alternate on/off five times each so drift in the machine's speed hits both; the
# median of each side is reported, and their ratio. SECONDS_PER_RUN (default 10) sets each run.
set -euo pipefail
off_flag=${1:?usage: benches/overhead.sh --no-monitoring|--no-request-metrics}
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
cargo build --release -q -p gateway --bin vane
seconds=${SECONDS_PER_RUN:-10}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"; kill $(jobs -p) 2>/dev/null || true' EXIT
row=$(sed -n 2p models/breast_cancer/reference.csv)
cat > "$scratch/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"inputs":[{"name":"input","shape":[1,30],"datatype":"FP32","data":[$row]}]}'
LUA

run() { # $1: extra flag; prints requests/s
  # Port 0: the demo prints its address once it is ready (after its first sync), which is the readiness signal.
  target/release/vane demo --no-traffic --listen 127.0.0.1:0 --grpc-listen off $1 >"$scratch/out" 2>"$scratch/err" &
  local pid=$! port=""
  for _ in $(seq 1 300); do # bounded at 30 s
    port=$(grep -oE 'on http://127\.0\.0\.1:[0-9]+' "$scratch/out" | head -1 | sed 's/.*://') || true
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "vane demo did not start: $(cat "$scratch/err")" >&2; exit 1; }
  wrk -t2 -c64 -d"${seconds}s" -s "$scratch/post.lua" "http://127.0.0.1:$port/v2/models/breast_cancer/infer" \
    | awk '/Requests\/sec/ {print $2}'
  if [ -z "$1" ]; then # with everything on, show that the monitor and the series saw the traffic
    curl -s "http://127.0.0.1:$port/metrics" \
      | grep -E '^vane_monitor_observations(_dropped)?_total|^vane_requests_total.*breast_cancer.*http.*success' >&2
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

on=(); off=()
for _ in 1 2 3 4 5; do
  on+=("$(run "")")
  off+=("$(run "$off_flag")")
done
median() { printf '%s\n' "$@" | sort -n | sed -n 3p; }
m_on=$(median "${on[@]}"); m_off=$(median "${off[@]}")
echo "on:              ${on[*]} req/s (median $m_on)"
echo "$off_flag: ${off[*]} req/s (median $m_off)"
python3 -c "print(f'on/off = {$m_on / $m_off:.3f}')"
