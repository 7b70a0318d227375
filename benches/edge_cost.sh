#!/usr/bin/env bash
# What a change to the request path costs in throughput: `bash benches/edge_cost.sh [BASE]` builds `vane` (release)
# at BASE (default 5120d33, the commit before the edge's limits: memory budget, signature-first decoding, connection
# bounds, probes apart, TLS-ready accept loops) and at the working tree, serves models/ with each on loopback, and
# runs wrk on batch-1 JSON to breast_cancer at 64 connections, alternating the two binaries five times so drift in
# the machine's speed hits both. Prints each side's requests/s and server CPU per request (from /proc), their
# medians, and the ratios head/base. SECONDS_PER_RUN (default 10) sets each run. BASE_BIN and HEAD_BIN compare two
# binaries already built instead (BASE is then only a label).
set -euo pipefail
base_rev=${1:-5120d33}
cd "$(dirname "$0")/.."
source benches/lib.sh
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
seconds=${SECONDS_PER_RUN:-10}
scratch=$(mktemp -d)
trap 'git worktree remove --force "$scratch/base" 2>/dev/null || true; rm -rf "$scratch"; kill $(jobs -p) 2>/dev/null || true' EXIT

if [ -n "${BASE_BIN:-}" ] && [ -n "${HEAD_BIN:-}" ]; then
  cp "$BASE_BIN" "$scratch/vane-base"; cp "$HEAD_BIN" "$scratch/vane-head"
else
  # Both builds share this target directory, so the dependencies are built once.
  root=$PWD
  git worktree add -q --detach "$scratch/base" "$base_rev"
  (cd "$scratch/base" && CARGO_TARGET_DIR="$root/target" cargo build --release -q -p gateway --bin vane)
  cp target/release/vane "$scratch/vane-base"
  cargo build --release -q -p gateway --bin vane
  cp target/release/vane "$scratch/vane-head"
fi

write_post_lua "$scratch/post.lua"

run() { # $1: the binary; prints "requests/s cpu_us_per_request"
  "$1" serve --model-dir models --listen 127.0.0.1:0 --grpc-listen off --log-format json \
    >/dev/null 2>"$scratch/err" &
  local pid=$! addr
  addr=$(serving_addr "$scratch/err")
  local before; before=$(cpu_ticks "$pid")
  wrk -t2 -c64 -d"${seconds}s" -s "$scratch/post.lua" "http://$addr/v2/models/breast_cancer/infer" >"$scratch/wrk"
  local ticks=$(( $(cpu_ticks "$pid") - before ))
  awk -v ticks="$ticks" -v hz="$(getconf CLK_TCK)" \
    '/requests in/ {n = $1} /Requests\/sec/ {rps = $2} END {printf "%s %.1f\n", rps, ticks / hz * 1e6 / n}' "$scratch/wrk"
  grep -q "Non-2xx" "$scratch/wrk" && { echo "non-2xx answers: $(cat "$scratch/wrk")" >&2; exit 1; }
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

head_runs=(); base_runs=()
for _ in 1 2 3 4 5; do
  head_runs+=("$(run "$scratch/vane-head")")
  base_runs+=("$(run "$scratch/vane-base")")
done
m_head=$(median $(column 1 "${head_runs[@]}")); m_base=$(median $(column 1 "${base_runs[@]}"))
c_head=$(median $(column 2 "${head_runs[@]}")); c_base=$(median $(column 2 "${base_runs[@]}"))
echo "head: $(column 1 "${head_runs[@]}" | tr '\n' ' ')req/s (median $m_head); CPU $(column 2 "${head_runs[@]}" | tr '\n' ' ')us/request (median $c_head)"
echo "base $base_rev: $(column 1 "${base_runs[@]}" | tr '\n' ' ')req/s (median $m_base); CPU $(column 2 "${base_runs[@]}" | tr '\n' ' ')us/request (median $c_base)"
python3 -c "print(f'throughput head/base = {$m_head / $m_base:.3f}; server CPU per request head/base = {$c_head / $c_base:.3f}')"
