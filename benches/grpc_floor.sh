#!/usr/bin/env bash
# The protocols' own floors, without Vane: `bash benches/grpc_floor.sh`. `examples/bare_hyper.rs` (reads each body,
# answers Vane's binary-REST response bytes for the request) against `examples/bare_tonic.rs` (tonic on Vane's
# generated service: decodes each ModelInferRequest, answers a prepared response of Vane's size for breast_cancer),
# each pinned to CPU 0, driven from CPU 1 by the same clients as `benches/grpc.sh` (wrk -t1 with the binary tensor
# extension's body; `examples/grpc_load.rs`), batch 1 of breast_cancer's row 0 at 16 and 64 in flight, three
# alternating runs each, and bare_tonic --direct (ModelInfer answered in a tower layer under tonic's router and
# codec, framed by hand) and bare_tonic --hyper (the same answer from hyper's own HTTP/2 server, no tonic). Prints
# requests/s and the server's CPU per request (user + system, /proc), medians, and the ratios to hyper: what HTTP/2
# and tonic cost per call over HTTP/1.1 and hyper before any of Vane's work, to set beside grpc.sh's ratio for
# Vane's two front doors, what skipping tonic's router and codec saves, and what leaving tonic altogether would.
# SECONDS_PER_RUN (default 5) sets each run.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
seconds=${SECONDS_PER_RUN:-5}
cargo build --release -q -p gateway --bin vane
cargo build --release -q --example grpc_load --example bare_hyper --example bare_tonic
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"; kill $(jobs -p) 2>/dev/null || true' EXIT
model=breast_cancer
write_binary_request "$model" "$scratch/$model"
row=$(cat "$scratch/$model.row")

# Vane's own answer to the request, which the bare hyper server sends back.
target/release/vane serve --model-dir models --listen 127.0.0.1:0 --grpc-listen off --log-format json \
  >/dev/null 2>"$scratch/err" &
vane=$!
addr=$(serving_addr "$scratch/err")
curl -sf -H 'Content-Type: application/octet-stream' -H "Inference-Header-Content-Length: $(cat "$scratch/$model.len")" \
  --data-binary @"$scratch/$model.bin" "http://$addr/v2/models/$model/infer" >"$scratch/response"
kill "$vane"; wait "$vane" 2>/dev/null || true

start() { # $1: the example; prints "pid addr"
  taskset -c 0 "target/release/examples/$1" "${@:2}" >"$scratch/out" &
  local pid=$! addr=""
  for _ in $(seq 1 300); do
    addr=$(sed -n 's/^listening on //p' "$scratch/out"); [ -n "$addr" ] && break; sleep 0.1
  done
  [ -n "$addr" ] || { echo "$1 did not start" >&2; exit 1; }
  echo "$pid $addr"
}

hyper_run() { # $1: connections; prints "requests/s cpu_us_per_request"
  read -r pid addr < <(start bare_hyper "$scratch/response")
  local before; before=$(cpu_ticks "$pid")
  HEADER_LENGTH=$(cat "$scratch/$model.len") BODY_FILE="$scratch/$model.bin" taskset -c 1 \
    wrk -t1 -c"$1" -d"${seconds}s" -s "$scratch/binary.lua" "http://$addr/v2/models/$model/infer" >"$scratch/wrk"
  local ticks=$(( $(cpu_ticks "$pid") - before ))
  kill "$pid"; wait "$pid" 2>/dev/null || true
  awk -v ticks="$ticks" '/requests in/ {n = $1} /Requests\/sec/ {rps = $2}
    END {printf "%s %.1f\n", rps, ticks * 1e4 / n}' "$scratch/wrk"
}

tonic_run() { # $1: calls in flight, then bare_tonic's arguments; prints "requests/s cpu_us_per_request"
  read -r pid addr < <(start bare_tonic "${@:2}")
  local before out; before=$(cpu_ticks "$pid")
  out=$(taskset -c 1 target/release/examples/grpc_load "$addr" "$model" "$row" "$1" "$seconds")
  local ticks=$(( $(cpu_ticks "$pid") - before ))
  kill "$pid"; wait "$pid" 2>/dev/null || true
  [ "$(echo "$out" | cut -d' ' -f5)" = 0 ] || { echo "gRPC errors: $out" >&2; exit 1; }
  echo "$out" | awk -v ticks="$ticks" -v seconds="$seconds" '{printf "%s %.1f\n", $1, ticks * 1e4 / ($1 * seconds)}'
}

for c in 16 64; do
  h=(); t=(); d=(); g=()
  for _ in 1 2 3; do
    h+=("$(hyper_run "$c")")
    t+=("$(tonic_run "$c")")
    d+=("$(tonic_run "$c" --direct)")
    g+=("$(tonic_run "$c" --hyper)")
  done
  hr=$(median3 $(column 1 "${h[@]}")); hc=$(median3 $(column 2 "${h[@]}"))
  tr=$(median3 $(column 1 "${t[@]}")); tc=$(median3 $(column 2 "${t[@]}"))
  dr=$(median3 $(column 1 "${d[@]}")); dc=$(median3 $(column 2 "${d[@]}"))
  gr=$(median3 $(column 1 "${g[@]}")); gc=$(median3 $(column 2 "${g[@]}"))
  python3 -c "print(f'c=$c bare hyper (HTTP/1.1) {$hr:.0f} req/s CPU {$hc} us/req; bare tonic (gRPC) {$tr:.0f} req/s CPU {$tc} us/req; tonic/hyper throughput {$tr / $hr:.2f}, CPU {$tc / $hc:.2f}x; bare tonic --direct {$dr:.0f} req/s CPU {$dc} us/req, CPU {$dc / $hc:.2f}x; gRPC on hyper alone (--hyper) {$gr:.0f} req/s CPU {$gc} us/req, CPU {$gc / $hc:.2f}x')"
done
