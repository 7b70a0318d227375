#!/usr/bin/env bash
# The soak bench: `bash benches/soak.sh` runs `vane serve --model-dir models` (release) for SOAK_SECONDS (default
# 1800) at 80% of the capacity it measures first (the soak client in a closed loop over 64 connections, 10 s, batch-1
# JSON to breast_cancer; it shares the two cores with the server, so wrk's figure, printed too, is out of its reach), with
# valid, invalid and slow clients mixed (examples/soak_client.rs). Prints a line a minute (valid p50/p99, errors,
# invalid answers by status, slow connections closed, the server's resident memory) and the first and last
# minute's memory and p99, which should be flat; exits non-zero if any valid request failed. The server runs on CPU 0
# and the clients on CPU 1 (taskset), so the load generator's own lag does not pass for the server's latency.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
seconds=${SOAK_SECONDS:-1800}
cargo build --release -q -p gateway --bin vane
cargo build --release -q --example soak_client
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"; kill $(jobs -p) 2>/dev/null || true' EXIT
taskset -c 0 target/release/vane serve --model-dir models --listen 127.0.0.1:0 --grpc-listen off --log-format json \
  >/dev/null 2>"$scratch/err" &
pid=$!
addr=$(serving_addr "$scratch/err")
write_post_lua "$scratch/post.lua"
wrk_capacity=$(taskset -c 1 wrk -t2 -c64 -d10s -s "$scratch/post.lua" "http://$addr/v2/models/breast_cancer/infer" \
  | awk '/Requests\/sec/ {print int($2)}')
capacity=$(taskset -c 1 target/release/examples/soak_client "$addr" capacity 10 | awk '/^capacity/ {print int($2)}')
rate=$(( capacity * 8 / 10 ))
echo "capacity (server on CPU 0, clients on CPU 1): ${capacity} req/s for the soak client (closed loop, 64 connections, 10 s), ${wrk_capacity} for wrk (c=64)"
echo "soaking at ${rate} req/s (80%) for ${seconds} s; server pid $pid"
taskset -c 1 target/release/examples/soak_client "$addr" "$pid" "$rate" "$seconds"
kill "$pid"; wait "$pid" 2>/dev/null || true
