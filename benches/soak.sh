#!/usr/bin/env bash
# The soak bench: `bash benches/soak.sh` runs `vane serve --model-dir models` (release) for SOAK_SECONDS (default
# 1800) at 80% of the capacity it measures first (wrk, batch-1 JSON to breast_cancer, 64 connections, 10 s), with
# valid, invalid and slow clients mixed (examples/soak_client.rs). Prints a line a minute (valid p50/p99, errors,
# invalid answers by status, slow connections closed, the server's resident memory) and the first and last
# minute's memory and p99, which should be flat; exits non-zero if any valid request failed.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
seconds=${SOAK_SECONDS:-1800}
cargo build --release -q -p gateway --bin vane
cargo build --release -q --example soak_client
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"; kill $(jobs -p) 2>/dev/null || true' EXIT
target/release/vane serve --model-dir models --listen 127.0.0.1:0 --grpc-listen off --log-format json \
  >/dev/null 2>"$scratch/err" &
pid=$!
addr=""
for _ in $(seq 1 300); do # bounded at 30 s: the log line "vane is serving" is the readiness signal
  addr=$(grep 'vane is serving' "$scratch/err" | grep -o '"addr":"[^"]*"' | sed 's/"addr":"//; s/"$//') || true
  [ -n "$addr" ] && break
  sleep 0.1
done
[ -n "$addr" ] || { echo "vane did not start: $(cat "$scratch/err")" >&2; exit 1; }
row=$(sed -n 2p models/breast_cancer/reference.csv)
cat > "$scratch/post.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"inputs":[{"name":"input","shape":[1,30],"datatype":"FP32","data":[$row]}]}'
LUA
capacity=$(wrk -t2 -c64 -d10s -s "$scratch/post.lua" "http://$addr/v2/models/breast_cancer/infer" \
  | awk '/Requests\/sec/ {print int($2)}')
rate=$(( capacity * 8 / 10 ))
echo "capacity ${capacity} req/s (wrk c=64, 10 s); soaking at ${rate} req/s for ${seconds} s; server pid $pid"
target/release/examples/soak_client "$addr" "$pid" "$rate" "$seconds"
kill "$pid"; wait "$pid" 2>/dev/null || true
