#!/usr/bin/env bash
# Prediction throughput with a feature on vs off: `bash benches/overhead.sh --no-monitoring` (the monitor: every
# prediction observed into a 200-row window, evaluated every 5 s), `--no-request-metrics` (the request series), or
# `--trace-sample-rate=R` (OpenTelemetry traces sampled at R, exported over OTLP to a counting sink,
# examples/otlp_sink.rs, vs no tracing; with OFF_FLAGS=--no-request-metrics, vs neither metrics nor tracing).
# `vane demo --no-traffic` (breast_cancer from Git with its reference data) under wrk on loopback, batch-1 JSON
# requests at 64 connections. Runs alternate on/off five times each so drift in the machine's speed hits both; the
# median of each side is reported, and their ratio. SECONDS_PER_RUN (default 10) sets each run.
set -euo pipefail
mode=${1:?usage: benches/overhead.sh --no-monitoring|--no-request-metrics|--trace-sample-rate=R}
cd "$(dirname "$0")/.."
source benches/lib.sh
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
cargo build --release -q -p gateway --bin vane
seconds=${SECONDS_PER_RUN:-10}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"; kill $(jobs -p) 2>/dev/null || true' EXIT
case "$mode" in
  --trace-sample-rate=*)
    cargo build --release -q --example otlp_sink
    target/release/examples/otlp_sink >"$scratch/sink" &
    sink_pid=$!
    for _ in $(seq 1 100); do grep -q listening "$scratch/sink" && break; sleep 0.1; done # bounded at 10 s
    endpoint=$(sed -n 's/^listening on //p' "$scratch/sink")
    [ -n "$endpoint" ] || { echo "the OTLP sink did not start" >&2; exit 1; }
    on_flags="--otlp-endpoint $endpoint --trace-sample-rate ${mode#*=}"
    # OFF_FLAGS=--no-request-metrics compares metrics and tracing on with both off.
    off_flags="${OFF_FLAGS:-}"
    ;;
  *) on_flags=""; off_flags="$mode" ;;
esac
write_post_lua "$scratch/post.lua"

run() { # $1: extra flags; $2: "show" prints what the server counted; prints requests/s
  # Port 0: the demo prints its address once it is ready (after its first sync), which is the readiness signal.
  target/release/vane demo --no-traffic --listen 127.0.0.1:0 --grpc-listen off $1 >"$scratch/out" 2>"$scratch/err" &
  local pid=$! port=""
  for _ in $(seq 1 300); do # bounded at 30 s
    port=$(grep -oE 'on http://127\.0\.0\.1:[0-9]+' "$scratch/out" | head -1 | sed 's/.*://') || true
    [ -n "$port" ] && break
    sleep 0.1
  done
  [ -n "$port" ] || { echo "vane demo did not start: $(cat "$scratch/err")" >&2; exit 1; }
  local before; before=$(cpu_ticks "$pid")
  wrk -t2 -c64 -d"${seconds}s" -s "$scratch/post.lua" "http://127.0.0.1:$port/v2/models/breast_cancer/infer" \
    >"$scratch/wrk"
  local ticks=$(( $(cpu_ticks "$pid") - before ))
  # requests/s, and the server's CPU time per request in microseconds (user + system, from /proc)
  awk -v ticks="$ticks" -v hz="$(getconf CLK_TCK)" \
    '/requests in/ {n = $1} /Requests\/sec/ {rps = $2} END {printf "%s %.1f\n", rps, ticks / hz * 1e6 / n}' "$scratch/wrk"
  if [ "${2:-}" = show ]; then # with the feature on, show that the monitor, the series and the tracer saw it
    curl -s "http://127.0.0.1:$port/metrics" \
      | grep -E '^vane_monitor_observations(_dropped)?_total|^vane_requests_total.*breast_cancer.*http.*success|^vane_trace_spans' >&2
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

on=(); off=()
for _ in 1 2 3 4 5; do
  on+=("$(run "$on_flags" show)")
  off+=("$(run "$off_flags")")
done
# Each run printed "requests/s cpu_us_per_request"; medians of each column per side.
m_on=$(median $(column 1 "${on[@]}")); m_off=$(median $(column 1 "${off[@]}"))
c_on=$(median $(column 2 "${on[@]}")); c_off=$(median $(column 2 "${off[@]}"))
echo "on ${on_flags:-(everything on)}: $(column 1 "${on[@]}" | tr '\n' ' ')req/s (median $m_on); CPU $(column 2 "${on[@]}" | tr '\n' ' ')us/request (median $c_on)"
echo "off ${off_flags:-(no tracing)}: $(column 1 "${off[@]}" | tr '\n' ' ')req/s (median $m_off); CPU $(column 2 "${off[@]}" | tr '\n' ' ')us/request (median $c_off)"
if [ -n "${sink_pid:-}" ]; then kill "$sink_pid"; wait "$sink_pid" 2>/dev/null || true; tail -1 "$scratch/sink"; fi
python3 -c "print(f'throughput on/off = {$m_on / $m_off:.3f}; server CPU per request on/off = {$c_on / $c_off:.3f}')"
