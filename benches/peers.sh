#!/usr/bin/env bash
# Vane beside the servers its users would otherwise run: `bash benches/peers.sh`. Two peers, each set up here in a
# throwaway venv under SCRATCH (default /tmp/vane-peers) with pinned versions, never a dependency of Vane:
# - FastAPI + onnxruntime (benches/peers/fastapi_server.py), uvicorn with one worker per core;
# - MLServer (Seldon's V2 server) with a small onnxruntime runtime of its own (benches/peers/mlserver/: runtime.py,
#   model-settings.json, settings.json), one parallel inference worker per core, HTTP only where MLServer lets it
#   (no metrics server; its gRPC server cannot be turned off, so it gets a port of its own), its other defaults kept.
# They and `vane serve --model-dir models` answer the same batch-1 V2 JSON request to breast_cancer (row 0 of its
# reference data); wrk drives each at 32 and 64 connections, the three servers alternating three times per
# concurrency, so drift in the machine's speed hits all of them. Prints each run's requests/s, the medians and the
# ratios vane/peer. SECONDS_PER_RUN (default 10) sets each run. Each server runs in a session of its own, stopped
# whole (workers included) after its run and at exit.
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
# MLServer 1.7.1 on the same fastapi/uvicorn as the FastAPI peer; uvloop 0.22+ breaks its inference workers ("There
# is no current event loop"), so uvloop stays at 0.21.0. The venv is made anew whenever these pins change.
ml_venv="$scratch_root/mlserver"
ml_pins=("mlserver==1.7.1" "onnxruntime==1.20.1" "numpy<3" "uvloop==0.21.0" "fastapi==0.115.6" "uvicorn==0.34.0")
if [ "$(cat "$ml_venv/pins" 2>/dev/null)" != "${ml_pins[*]}" ]; then
  rm -rf "$ml_venv"
  python3 -m venv "$ml_venv"
  "$ml_venv/bin/pip" install -q "${ml_pins[@]}"
  echo "${ml_pins[*]}" >"$ml_venv/pins"
fi
cargo build --release -q -p gateway --bin vane
scratch=$(mktemp -d)
trap 'stop_server; rm -rf "$scratch"; kill $(jobs -p) 2>/dev/null || true' EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
write_post_lua "$scratch/post.lua"
body=$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" "$scratch/post.lua")
workers=$(nproc)

# Runs its arguments as a server in a session of its own (setsid: the server's pid is the session's and process group's
# id), so that stop_server stops it together with every process it spawns. One server at a time.
start_server() {
  setsid "$@" &
  echo $! >"$scratch/server.pid"
}

# Stops the running server's whole session: TERM, then KILL whatever is still there after 10 s.
stop_server() {
  local pid
  pid=$(cat "$scratch/server.pid" 2>/dev/null) || return 0
  pkill -TERM -s "$pid" || true
  for _ in $(seq 1 100); do
    running --sid "$pid" || break
    sleep 0.1
  done
  pkill -KILL -s "$pid" || true
  wait "$pid" 2>/dev/null || true
  rm -f "$scratch/server.pid"
}

# Whether a process that `ps "$@"` selects is still running (a zombie is not).
running() { ps -o stat= "$@" 2>/dev/null | awk '$1 !~ /^Z/ {n++} END {exit !n}'; }

free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }

# Waits until the server on port $1 answers the request itself, at most $2 seconds, and fails early if it died.
wait_answers() { # $1: port, $2: seconds
  local deadline=$((SECONDS + $2)) pid
  pid=$(cat "$scratch/server.pid")
  while [ "$SECONDS" -lt "$deadline" ] && running -p "$pid"; do
    curl -sf -m 2 -H 'Content-Type: application/json' -d "$body" \
      "http://127.0.0.1:$1/v2/models/breast_cancer/infer" >/dev/null && return 0
    sleep 0.1
  done
  return 1
}

run_vane() { # $1: connections; prints requests/s
  start_server target/release/vane serve --model-dir models --listen 127.0.0.1:0 --grpc-listen off --log-format json \
    >/dev/null 2>"$scratch/err"
  local addr
  addr=$(serving_addr "$scratch/err") || { stop_server; exit 1; }
  wrk -t2 -c"$1" -d"${seconds}s" -s "$scratch/post.lua" "http://$addr/v2/models/breast_cancer/infer" >"$scratch/wrk"
  stop_server
  check_and_print
}

run_peer() { # $1: connections; prints requests/s
  local port
  port=$(free_port)
  start_server env -C benches/peers MODEL="$PWD/models/breast_cancer/2/model.onnx" "$venv/bin/uvicorn" \
    fastapi_server:app --workers "$workers" --host 127.0.0.1 --port "$port" --log-level warning \
    >/dev/null 2>"$scratch/peer-err"
  wait_answers "$port" 30 || { echo "fastapi peer did not answer: $(cat "$scratch/peer-err")" >&2; stop_server; exit 1; }
  wrk -t2 -c"$1" -d"${seconds}s" -s "$scratch/post.lua" "http://127.0.0.1:$port/v2/models/breast_cancer/infer" \
    >"$scratch/wrk"
  stop_server
  check_and_print
}

run_mlserver() { # $1: connections; prints requests/s
  local port
  port=$(free_port)
  # Port, gRPC port (0: any free one) and workers come from the environment, the rest from benches/peers/mlserver's
  # settings.json. Run from $scratch, where it makes its .envs folder.
  start_server env -C "$scratch" MLSERVER_HTTP_PORT="$port" MLSERVER_GRPC_PORT=0 MLSERVER_PARALLEL_WORKERS="$workers" \
    PYTHONDONTWRITEBYTECODE=1 "$ml_venv/bin/mlserver" start "$PWD/benches/peers/mlserver" >"$scratch/mlserver-log" 2>&1
  wait_answers "$port" 60 || { echo "mlserver did not answer: $(tail -40 "$scratch/mlserver-log")" >&2; stop_server; exit 1; }
  wrk -t2 -c"$1" -d"${seconds}s" -s "$scratch/post.lua" "http://127.0.0.1:$port/v2/models/breast_cancer/infer" \
    >"$scratch/wrk"
  stop_server
  check_and_print
}

check_and_print() {
  grep -q "Non-2xx" "$scratch/wrk" && { echo "non-2xx answers: $(cat "$scratch/wrk")" >&2; exit 1; }
  awk '/Requests\/sec/ {print $2}' "$scratch/wrk"
}

for c in 32 64; do
  vane=(); peer=(); ml=()
  for _ in 1 2 3; do
    vane+=("$(run_vane "$c")")
    peer+=("$(run_peer "$c")")
    ml+=("$(run_mlserver "$c")")
  done
  m_vane=$(printf '%s\n' "${vane[@]}" | sort -n | sed -n 2p); m_peer=$(printf '%s\n' "${peer[@]}" | sort -n | sed -n 2p)
  m_ml=$(printf '%s\n' "${ml[@]}" | sort -n | sed -n 2p)
  echo "c=$c vane: ${vane[*]} req/s (median $m_vane)"
  echo "c=$c fastapi+onnxruntime ($workers workers): ${peer[*]} req/s (median $m_peer)"
  echo "c=$c mlserver+onnxruntime ($workers parallel workers): ${ml[*]} req/s (median $m_ml)"
  python3 -c "print(f'c=$c vane / fastapi = {$m_vane / $m_peer:.1f}x')"
  python3 -c "print(f'c=$c vane / mlserver = {$m_vane / $m_ml:.1f}x')"
done
