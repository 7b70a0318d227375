#!/usr/bin/env bash
# `vane drift --estimated-quality isotonic --multivariate` vs NannyML 0.13.1's CBPE and data-reconstruction drift on
# ROWS x 20 features (default 200,000) with a classifier's label, score and prediction, on this machine, in one run.
# NannyML goes into a throwaway venv under the scratch folder; it is never a dependency of Vane. Both sides print
# the accuracy estimate and the reconstruction error, which must agree.
set -euo pipefail
cd "$(dirname "$0")/../.."
rows=${1:-200000}
scratch=${SCRATCH:-/tmp/vane-drift-bench}
mkdir -p "$scratch"
data="$scratch/quality-$rows"
[ -f "$data/current.csv" ] || python3 benches/drift/make_quality_data.py "$data" "$rows"
if [ ! -x "$scratch/nannyml/bin/python" ]; then
  python3 -m venv "$scratch/nannyml"
  "$scratch/nannyml/bin/pip" install -q "nannyml==0.13.1"
fi
cargo build --release -q -p gateway --bin vane
vane=target/release/vane
flags=(--classification label=y_true,score=y_pred_proba,prediction=y_pred --estimated-quality isotonic --multivariate)
"$vane" drift --reference "$data/reference.csv" --current "$data/current.csv" "${flags[@]}" --out /dev/null # warm the page cache
# The best of three whole-process runs of each (reading both CSVs to a finished result). vane also computes every
# column's drift statistics in the same run; NannyML only the two estimators.
best=$(python3 - "$vane" "$data" "$scratch" "${flags[@]}" <<'PY'
import subprocess, sys, time
vane, data, scratch, *flags = sys.argv[1:]
times = []
for _ in range(3):
    start = time.perf_counter()
    subprocess.run([vane, "drift", "--reference", f"{data}/reference.csv", "--current", f"{data}/current.csv", *flags,
                    "--out", f"{scratch}/vane-quality.json"], check=True)
    times.append(time.perf_counter() - start)
print(f"{min(times):.3f}")
PY
)
python3 -c "
import json; r = json.load(open('$scratch/vane-quality.json'))
print(f\"vane: accuracy={r['estimated_quality']['accuracy']:.6f} reconstruction_error={r['multivariate']['reconstruction_error']['current']:.6f}\")"
nannyml=$(for _ in 1 2 3; do "$scratch/nannyml/bin/python" benches/drift/nannyml_run.py "$data" 2>/dev/null; done | sort -n | head -1)
"$scratch/nannyml/bin/python" benches/drift/nannyml_run.py "$data" 2>&1 >/dev/null | sed 's/^/nannyml: /'
echo "rows=$rows vane_drift_seconds=$best nannyml_seconds=$nannyml"
python3 -c "print(f'ratio (NannyML / vane): {$nannyml / $best:.1f}x')"
