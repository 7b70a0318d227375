#!/usr/bin/env bash
# vane drift vs Evidently on ROWS x 20 columns (default 200,000), on this machine, in one run.
# Evidently goes into a throwaway venv under the scratch folder; it is never a dependency of Vane.
set -euo pipefail
cd "$(dirname "$0")/../.."
rows=${1:-200000}
scratch=${SCRATCH:-/tmp/vane-drift-bench}
mkdir -p "$scratch"
[ -f "$scratch/data-$rows/current.csv" ] || python3 benches/drift/make_data.py "$scratch/data-$rows" "$rows"
if [ ! -x "$scratch/venv/bin/python" ]; then
  python3 -m venv "$scratch/venv"
  "$scratch/venv/bin/pip" install -q "evidently==0.7.23" "pandas<3"
fi
cargo build --release -q -p gateway --bin vane
vane=target/release/vane
data="$scratch/data-$rows"
"$vane" drift --reference "$data/reference.csv" --current "$data/current.csv" --out /dev/null # warm the page cache
# The best of three whole-process runs of vane (reading both CSVs, every statistic, writing the JSON).
best=$(python3 - "$vane" "$data" "$scratch" <<'PY'
import subprocess, sys, time
vane, data, scratch = sys.argv[1:4]
times = []
for _ in range(3):
    start = time.perf_counter()
    subprocess.run([vane, "drift", "--reference", f"{data}/reference.csv", "--current", f"{data}/current.csv",
                    "--out", f"{scratch}/vane.json"], check=True)
    times.append(time.perf_counter() - start)
print(f"{min(times):.3f}")
PY
)
evidently=$("$scratch/venv/bin/python" benches/drift/evidently_run.py "$data")
echo "rows=$rows vane_drift_seconds=$best evidently_seconds=$evidently"
python3 -c "print(f'ratio (Evidently / vane): {$evidently / $best:.1f}x')"
