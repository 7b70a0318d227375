#!/usr/bin/env bash
# Vane beside the server its users would otherwise write: `bash benches/peers.sh`. A FastAPI + onnxruntime server
# (benches/peers/fastapi_server.py, pinned versions in a throwaway venv under SCRATCH, never a dependency of Vane,
# uvicorn with one worker per core) and `vane serve --model-dir models` answer the same batch-1 V2 JSON request to
# breast_cancer (row 0 of its reference data); wrk drives each at 32 and 64 connections, the two servers alternating
# three times per concurrency, so drift in the machine's speed hits both. Prints each run's requests/s, the medians
# and the ratio vane/peer. SECONDS_PER_RUN (default 10) sets each run.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
seconds=${SECONDS_PER_RUN:-10}
scratch_root=${SCRATCH:-/tmp/vane-peers}
mkdir -p "$scratch_root"
venv="$scratch_root/fastapi"
if [ ! -x "$venv/bin/uvicorn" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q "fastapi==0.115.6" "uvicorn==0.34.0" "onnxruntime==1.20.1" "numpy<3"
fi
cargo build --release -q -p gateway --bin vane
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"; kill $(jobs -p) 2>/dev/null || true' EXIT
write_post_lua "$scratch/post.lua"
workers=$(nproc)

run_vane() { # $1: connections; prints requests/s
  target/release/vane serve --model-dir models --listen 127.0.0.1:0 --grpc-listen off --log-format json \
    >/dev/null 2>"$scratch/err" &
  local pid=$! addr
  addr=$(serving_addr "$scratch/err")
  wrk -t2 -c"$1" -d"${seconds}s" -s "$scratch/post.lua" "http://$addr/v2/models/breast_cancer/infer" >"$scratch/wrk"
  check_and_print
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

run_peer() { # $1: connections; prints requests/s
  local port
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  (cd benches/peers && MODEL="$OLDPWD/models/breast_cancer/1/model.onnx" "$venv/bin/uvicorn" fastapi_server:app \
    --workers "$workers" --host 127.0.0.1 --port "$port" --log-level warning) >/dev/null 2>"$scratch/peer-err" &
  local pid=$!
  # Ready once it answers the request itself (bounded at 30 s).
  for _ in $(seq 1 300); do
    curl -sf -H 'Content-Type: application/json' -d "$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" "$scratch/post.lua")" \
      "http://127.0.0.1:$port/v2/models/breast_cancer/infer" >/dev/null && break
    sleep 0.1
  done
  wrk -t2 -c"$1" -d"${seconds}s" -s "$scratch/post.lua" "http://127.0.0.1:$port/v2/models/breast_cancer/infer" \
    >"$scratch/wrk"
  check_and_print
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

check_and_print() {
  grep -q "Non-2xx" "$scratch/wrk" && { echo "non-2xx answers: $(cat "$scratch/wrk")" >&2; exit 1; }
  awk '/Requests\/sec/ {print $2}' "$scratch/wrk"
}

for c in 32 64; do
  vane=(); peer=()
  for _ in 1 2 3; do
    vane+=("$(run_vane "$c")")
    peer+=("$(run_peer "$c")")
  done
  m_vane=$(printf '%s\n' "${vane[@]}" | sort -n | sed -n 2p); m_peer=$(printf '%s\n' "${peer[@]}" | sort -n | sed -n 2p)
  echo "c=$c vane: ${vane[*]} req/s (median $m_vane)"
  echo "c=$c fastapi+onnxruntime ($workers workers): ${peer[*]} req/s (median $m_peer)"
  python3 -c "print(f'c=$c vane / fastapi = {$m_vane / $m_peer:.1f}x')"
done
