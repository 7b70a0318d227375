#!/usr/bin/env bash
# Where the request path's time goes: `bash benches/profile.sh`. Serves models/ with the release `vane`, drives
# batch-1 JSON to breast_cancer with wrk at 64 connections, and samples the server with perf (cpu-clock, 2 kHz) for
# PERF_SECONDS (default 8) after a 2 s warm-up. Prints the share of samples by thread, by kind of work (the symbol
# groups below: kernel networking, scheduling, allocator, JSON, hyper, tokio, tower, metrics, clock, ...), the top
# symbols, and the model's batcher figures from the stats endpoint over the run (mean batch, inline runs, run
# estimate). perf comes from Debian's linux-perf if missing. VANE_BIN profiles another build.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
command -v perf >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq linux-perf; }
seconds=${PERF_SECONDS:-8}
[ -n "${VANE_BIN:-}" ] || cargo build --release -q -p gateway --bin vane
vane=${VANE_BIN:-target/release/vane}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"; kill $(jobs -p) 2>/dev/null || true' EXIT
write_post_lua "$scratch/post.lua"
path=/v2/models/breast_cancer/infer

"$vane" serve --model-dir models --listen 127.0.0.1:0 --grpc-listen off --log-format json >/dev/null 2>"$scratch/err" &
pid=$!
addr=$(serving_addr "$scratch/err")
stats() { curl -sf "http://$addr/v2/models/breast_cancer/stats"; }
wrk -t2 -c64 -d2s -s "$scratch/post.lua" "http://$addr$path" >/dev/null
stats >"$scratch/before"
perf record -q -F 2000 -p "$pid" -o "$scratch/perf.data" -- sleep "$seconds" 2>/dev/null &
perf_pid=$!
wrk -t2 -c64 -d"${seconds}s" -s "$scratch/post.lua" "http://$addr$path" | grep Requests/sec
wait "$perf_pid"
stats >"$scratch/after"
kill "$pid"; wait "$pid" 2>/dev/null || true

echo "== samples by thread"
perf report -i "$scratch/perf.data" --no-children --sort comm 2>/dev/null | grep -v '^#' | grep -v '^$' | head -6
perf report -i "$scratch/perf.data" --no-children --sort sym 2>/dev/null | grep -v '^#' | grep -v '^$' >"$scratch/flat"
echo "== samples by kind of work (all threads)"
python3 - "$scratch/flat" <<'PY'
import re, sys
kinds = [  # first match wins
    ("kernel: networking", r"\[k\].*(tcp|ip_|skb|sock|net_|napi|dev_|softirq|inet|loopback|copy_(to|from)_iter|recv|readv|writev)"),
    ("kernel: scheduling", r"\[k\].*(finish_task_switch|schedule|futex|spin|wake|enqueue|dequeue|pick_next|switch|ttwu|sched)"),
    ("kernel: other", r"\[k\]"),
    ("allocator (mimalloc)", r"mi_|malloc|free"),
    ("memcpy/memcmp", r"memmove|memcpy|memset|memcmp"),
    ("clock reads", r"clock_gettime|vdso"),
    ("JSON", r"serde|zmij|ryu|parse_number|format_escaped|Visitor|Flatten|protocol::|itoa"),
    ("hyper/http", r"hyper|http::|httparse|h2::"),
    ("tokio/mio", r"tokio|mio|atomic_waker"),
    ("tower", r"tower"),
    ("metrics", r"metrics|prometheus"),
    ("ONNX Runtime wrapper (ort)", r"ort::"),
    ("gateway (other)", r"gateway"),
]
shares = {}
for line in open(sys.argv[1]):
    share, _, symbol = line.strip().partition(" ")
    try:
        share = float(share.rstrip("%"))
    except ValueError:
        continue
    kind = next((k for k, pattern in kinds if re.search(pattern, symbol)), "other (incl. libonnxruntime, libc)")
    shares[kind] = shares.get(kind, 0) + share
for kind, share in sorted(shares.items(), key=lambda kv: -kv[1]):
    print(f"{share:5.1f}%  {kind}")
PY
echo "== top symbols"
head -25 "$scratch/flat" | cut -c1-150
echo "== the batcher over the run"
python3 - "$scratch/before" "$scratch/after" <<'PY'
import json, sys
before, after = (json.load(open(f))["model_stats"] for f in sys.argv[1:3])
for b, a in zip(before, after):
    runs, rows = a["execution_count"] - b["execution_count"], a["inference_count"] - b["inference_count"]
    if runs:
        print(f"breast_cancer version {a['version']}: {rows} rows in {runs} runs (mean batch {rows / runs:.1f}), "
              f"{a['inline_count'] - b['inline_count']} inline, run estimate {a['run_estimate_us']:.1f} us")
PY
