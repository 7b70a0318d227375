#!/usr/bin/env bash
# gRPC against binary REST, each load client in its own process: `bash benches/grpc.sh`. Serves models/ with the
# release `vane` pinned to CPU 0; the clients run pinned to CPU 1: wrk (one thread) for REST with the binary tensor
# extension, `examples/grpc_load.rs` (a tonic client on one thread, raw tensor contents) for gRPC ModelInfer. Both
# send batch 1 of row 0 of the model's reference data (breast_cancer, dense) at 1, 16 and 64 requests in flight,
# alternating three times per case so drift in the machine's speed hits both. Prints each case's requests/s and p99
# (medians of the three), the server's CPU time per request in each (user + system, from /proc, so a client that
# cannot keep the server busy shows as a throughput gap but not a cost gap), and the ratios gRPC/binary.
# SECONDS_PER_RUN (default 5) sets each run.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
seconds=${SECONDS_PER_RUN:-5}
cargo build --release -q -p gateway --bin vane
cargo build --release -q --example grpc_load
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"; kill $(jobs -p) 2>/dev/null || true' EXIT

taskset -c 0 target/release/vane serve --model-dir models --listen 127.0.0.1:0 --grpc-listen 127.0.0.1:0 \
  --log-format json >/dev/null 2>"$scratch/err" &
server=$!
addr=$(serving_addr "$scratch/err")
grpc=$(grep 'vane is serving' "$scratch/err" | grep -o '"grpc":"[^"]*"' | sed 's/"grpc":"//; s/"$//')

rest() { # $1 model, $2 connections; prints "requests/s p99_us server_cpu_us_per_request"
  local before; before=$(cpu_ticks "$server")
  HEADER_LENGTH=$(cat "$scratch/$1.len") BODY_FILE="$scratch/$1.bin" taskset -c 1 \
    wrk -t1 -c"$2" -d"${seconds}s" --latency -s "$scratch/binary.lua" "http://$addr/v2/models/$1/infer" >"$scratch/wrk"
  local ticks=$(( $(cpu_ticks "$server") - before ))
  grep -q "Non-2xx" "$scratch/wrk" && { echo "non-2xx answers: $(cat "$scratch/wrk")" >&2; exit 1; }
  awk -v ticks="$ticks" 'function us(v) { if (v ~ /ms$/) return v * 1000; if (v ~ /us$/) return v + 0; return v * 1e6 }
       /requests in/ {n = $1} /Requests\/sec/ {rps = $2} $1 == "99%" {p99 = us($2)}
       END {printf "%s %.0f %.1f\n", rps, p99, ticks * 1e4 / n}' "$scratch/wrk"
}

grpc_run() { # $1 model, $2 calls in flight; prints "requests/s p99_us server_cpu_us_per_request"
  local out before; before=$(cpu_ticks "$server")
  out=$(taskset -c 1 target/release/examples/grpc_load "$grpc" "$1" "$(cat "$scratch/$1.row")" "$2" "$seconds")
  [ "$(echo "$out" | cut -d' ' -f5)" = 0 ] || { echo "gRPC errors: $out" >&2; exit 1; }
  local ticks=$(( $(cpu_ticks "$server") - before ))
  echo "$out" | awk -v ticks="$ticks" -v seconds="$seconds" '{printf "%s %s %.1f\n", $1, $3, ticks * 1e4 / ($1 * seconds)}'
}

for model in breast_cancer dense; do
  write_binary_request "$model" "$scratch/$model"
  for c in 1 16 64; do
    r=(); g=()
    for _ in 1 2 3; do
      r+=("$(rest "$model" "$c")")
      g+=("$(grpc_run "$model" "$c")")
    done
    rr=$(median3 $(column 1 "${r[@]}")); rp=$(median3 $(column 2 "${r[@]}"))
    gr=$(median3 $(column 1 "${g[@]}")); gp=$(median3 $(column 2 "${g[@]}"))
    rc=$(median3 $(column 3 "${r[@]}")); gc=$(median3 $(column 3 "${g[@]}"))
    python3 -c "print(f'$model c=$c binary REST {$rr:.0f} req/s p99 {$rp} us CPU {$rc} us/req; gRPC {$gr:.0f} req/s p99 {$gp} us CPU {$gc} us/req; gRPC/binary throughput {$gr / $rr:.2f}, p99 {$gp / max($rp, 1):.2f}x, CPU {$gc / $rc:.2f}x')"
  done
done
