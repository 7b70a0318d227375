#!/usr/bin/env bash
# vane drift --stream on a ROWS x 20 file pair (default 10,000,000) against Evidently 0.7.23 on the 200,000-row pair,
# same machine, same run: `bash benches/drift/stream_run.sh [ROWS]`. The large pair is run.sh's 200,000-row pair
# repeated (ROWS a multiple of 200,000): its distributions are the small pair's, so the streamed report's verdicts
# are checked against the exact report of the small pair, while the reading and summarizing are ROWS rows'. Prints
# vane's wall seconds and peak resident memory (GNU time, best of three), Evidently's seconds, the ratio, and the
# largest difference in the numeric columns' K-S statistic and normed Wasserstein distance.
set -euo pipefail
cd "$(dirname "$0")/../.."
rows=${1:-10000000}
scratch=${SCRATCH:-/tmp/vane-drift-bench}
small="$scratch/data-200000"
large="$scratch/data-$rows"
mkdir -p "$scratch"
command -v /usr/bin/time >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq time; }
[ -f "$small/current.csv" ] || python3 benches/drift/make_data.py "$small" 200000
if [ ! -f "$large/current.csv" ]; then
  mkdir -p "$large"
  for side in reference current; do
    { head -1 "$small/$side.csv"; for _ in $(seq $((rows / 200000))); do tail -n +2 "$small/$side.csv"; done; } >"$large/$side.csv"
  done
fi
if [ ! -x "$scratch/venv/bin/python" ]; then
  python3 -m venv "$scratch/venv"
  "$scratch/venv/bin/pip" install -q "evidently==0.7.23" "pandas<3"
fi
cargo build --release -q -p gateway --bin vane
vane=target/release/vane
cat "$large/reference.csv" "$large/current.csv" >/dev/null # the page cache, for every run alike
best=""
for _ in 1 2 3; do
  /usr/bin/time -f "%e %M" -o "$scratch/time" "$vane" drift --stream --reference "$large/reference.csv" \
    --current "$large/current.csv" --out "$scratch/stream.json"
  read -r seconds kb <"$scratch/time"
  if [ -z "$best" ] || python3 -c "import sys; sys.exit(0 if $seconds < ${best% *} else 1)"; then best="$seconds $kb"; fi
done
"$vane" drift --reference "$small/reference.csv" --current "$small/current.csv" --out "$scratch/exact.json"
evidently=$("$scratch/venv/bin/python" benches/drift/evidently_run.py "$small")
python3 - "$scratch/stream.json" "$scratch/exact.json" "$rows" "$best" "$evidently" <<'PY'
import json, sys
stream, exact = (json.load(open(f)) for f in sys.argv[1:3])
rows, (seconds, kb), evidently = int(sys.argv[3]), sys.argv[4].split(), float(sys.argv[5])
seconds = float(seconds)
print(f"vane drift --stream, {rows:,} rows x 20 per file: {seconds:.2f} s, peak resident memory {int(kb) / 1024:.0f} MiB")
print(f"Evidently, 200,000 rows x 20 per file: {evidently:.2f} s; Evidently(200k) / vane --stream({rows:,}) = {evidently / seconds:.2f}")
verdicts = all(stream["columns"][c]["drift"]["drifted"] == exact["columns"][c]["drift"]["drifted"] for c in exact["columns"])
ks = max(abs(stream["columns"][c]["ks"]["statistic"] - exact["columns"][c]["ks"]["statistic"])
         for c in exact["columns"] if exact["columns"][c]["kind"] == "numeric")
w = max(abs(stream["columns"][c]["wasserstein"]["normed"] - exact["columns"][c]["wasserstein"]["normed"])
        for c in exact["columns"] if exact["columns"][c]["kind"] == "numeric")
print(f"against the exact report of the 200,000-row pair: every verdict the same: {verdicts}; largest |dK-S D| {ks:.5f}, "
      f"largest |d normed W1| {w:.5f}; rank error per side {stream['streamed']['rank_error']:.5f}")
PY
