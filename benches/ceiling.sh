#!/usr/bin/env bash
# Vane against the HTTP ceiling: `bash benches/ceiling.sh`. Serves models/ with the release `vane` and, as the
# ceiling, `examples/bare_hyper.rs` (a bare hyper server in its own process that reads each body and answers Vane's
# own response bytes: the same socket work and nothing else), and runs wrk on batch-1 JSON to breast_cancer at 32
# and 64 connections, alternating the two servers five times per concurrency so drift in the machine's speed hits
# both. Prints each run's requests/s and server CPU per request (from /proc), the medians, and the ratios
# vane/hyper, and wrk's own CPU per request (user + system, /usr/bin/time), which both servers' throughput shares
# the two cores with: vane's best possible throughput ratio is (wrk + hyper) / (wrk + hyper + what vane must add).
# Then a lone client (c=1, where the batcher can only run each request alone): vane as it runs by default
# (a lone request to a model of a few microseconds runs on the thread that decoded it) against the same binary with
# --inline-max-run 0 (every run on a worker thread), five alternating runs, requests/s and p50/p99 latency.
# SECONDS_PER_RUN (default 5) sets each run; VANE_BIN compares another build of vane.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
[ -x /usr/bin/time ] || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time; }
seconds=${SECONDS_PER_RUN:-5}
cargo build --release -q -p gateway --bin vane
cargo build --release -q --example bare_hyper
vane=${VANE_BIN:-target/release/vane}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"; kill $(jobs -p) 2>/dev/null || true' EXIT
write_post_lua "$scratch/post.lua"
path=/v2/models/breast_cancer/infer

measure() { # $1: pid, $2: addr, $3: connections; prints "requests/s cpu_us_per_request wrk_cpu_us_per_request"
  local before; before=$(cpu_ticks "$1")
  /usr/bin/time -f '%U %S' -o "$scratch/wrk-time" \
    wrk -t2 -c"$3" -d"${seconds}s" -s "$scratch/post.lua" "http://$2$path" >"$scratch/wrk"
  local ticks=$(( $(cpu_ticks "$1") - before ))
  grep -q "Non-2xx" "$scratch/wrk" && { echo "non-2xx answers: $(cat "$scratch/wrk")" >&2; exit 1; }
  awk -v ticks="$ticks" -v hz="$(getconf CLK_TCK)" -v wrk="$(awk '{print $1 + $2}' "$scratch/wrk-time")" \
    '/requests in/ {n = $1} /Requests\/sec/ {rps = $2}
     END {printf "%s %.1f %.1f\n", rps, ticks / hz * 1e6 / n, wrk * 1e6 / n}' "$scratch/wrk"
}

run_vane() { # $1: connections, then extra arguments for vane
  local connections=$1; shift
  "$vane" serve --model-dir models --listen 127.0.0.1:0 --grpc-listen off --log-format json "$@" \
    >/dev/null 2>"$scratch/err" &
  local pid=$! addr
  addr=$(serving_addr "$scratch/err")
  # The ceiling answers exactly what Vane answers.
  [ -s "$scratch/response" ] || curl -sf -H 'Content-Type: application/json' \
    -d "$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" "$scratch/post.lua")" "http://$addr$path" >"$scratch/response"
  measure "$pid" "$addr" "$connections"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

run_hyper() { # $1: connections
  target/release/examples/bare_hyper "$scratch/response" >"$scratch/hyper-out" &
  local pid=$! addr=""
  for _ in $(seq 1 300); do
    addr=$(sed -n 's/^listening on //p' "$scratch/hyper-out"); [ -n "$addr" ] && break; sleep 0.1
  done
  measure "$pid" "$addr" "$1"
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

for c in 32 64; do
  v=(); h=()
  for _ in 1 2 3 4 5; do
    v+=("$(run_vane "$c")")
    h+=("$(run_hyper "$c")")
  done
  mv=$(median $(column 1 "${v[@]}")); mh=$(median $(column 1 "${h[@]}"))
  cv=$(median $(column 2 "${v[@]}")); ch=$(median $(column 2 "${h[@]}"))
  wv=$(median $(column 3 "${v[@]}")); wh=$(median $(column 3 "${h[@]}"))
  echo "c=$c vane: $(column 1 "${v[@]}" | tr '\n' ' ')req/s (median $mv); CPU $(column 2 "${v[@]}" | tr '\n' ' ')us/request (median $cv)"
  echo "c=$c hyper: $(column 1 "${h[@]}" | tr '\n' ' ')req/s (median $mh); CPU $(column 2 "${h[@]}" | tr '\n' ' ')us/request (median $ch)"
  python3 -c "print(f'c=$c throughput vane/hyper = {$mv / $mh:.2f}; server CPU per request vane/hyper = {$cv / $ch:.2f}; wrk CPU per request {$wv} us (against vane), {$wh} us (against hyper)')"
done

# A lone client: requests/s, p50 and p99 (wrk's, in us).
lone() { # extra arguments for vane
  "$vane" serve --model-dir models --listen 127.0.0.1:0 --grpc-listen off --log-format json "$@" \
    >/dev/null 2>"$scratch/err" &
  local pid=$! addr
  addr=$(serving_addr "$scratch/err")
  wrk -t1 -c1 -d"${seconds}s" --latency -s "$scratch/post.lua" "http://$addr$path" >"$scratch/wrk"
  grep -q "Non-2xx" "$scratch/wrk" && { echo "non-2xx answers: $(cat "$scratch/wrk")" >&2; exit 1; }
  kill "$pid"; wait "$pid" 2>/dev/null || true
  awk 'function us(v) { if (v ~ /ms$/) return v * 1000; if (v ~ /us$/) return v + 0; return v * 1e6 }
       /Requests\/sec/ {rps = $2} $1 == "50%" {p50 = us($2)} $1 == "99%" {p99 = us($2)}
       END {printf "%s %.0f %.0f\n", rps, p50, p99}' "$scratch/wrk"
}
i=(); w=()
for _ in 1 2 3 4 5; do
  i+=("$(lone)")
  w+=("$(lone --inline-max-run 0)")
done
for side in i w; do
  declare -n runs=$side
  label=$([ $side = i ] && echo "vane (lone requests on their own thread)" || echo "vane --inline-max-run 0")
  echo "c=1 $label: $(column 1 "${runs[@]}" | tr '\n' ' ')req/s (median $(median $(column 1 "${runs[@]}"))); p50 median $(median $(column 2 "${runs[@]}")) us; p99 median $(median $(column 3 "${runs[@]}")) us"
done
python3 -c "print(f'c=1 throughput inline/worker = {$(median $(column 1 "${i[@]}")) / $(median $(column 1 "${w[@]}")):.2f}; p50 {$(median $(column 2 "${i[@]}")) / $(median $(column 2 "${w[@]}")):.2f}x; p99 {$(median $(column 3 "${i[@]}")) / $(median $(column 3 "${w[@]}")):.2f}x')"
