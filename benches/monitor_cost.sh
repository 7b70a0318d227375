#!/usr/bin/env bash
# What the monitor costs with everything of its second edition on: `bash benches/monitor_cost.sh`. One deployment
# from a Git repository made here: the quality-case pass-through model (tests/e2e/quality-models/pass_through.onnx)
# with shared/quality-cases' q02 reference, monitored with estimated quality (CBPE, `auto` calibration), multivariate
# drift, data-quality checks, every feature's drift statistics and rules on all of them, every prediction observed
# into a 1,000-row window evaluated every 5 s. wrk sends batch-1 JSON rows of q02's current file at 64 connections;
# runs alternate monitoring on and `--no-monitoring` five times each (SECONDS_PER_RUN, default 10) so drift in the
# machine's speed hits both. Prints requests/s and the server's CPU time per prediction (user + system from /proc,
# divided by the requests served), their medians and ratios.
set -euo pipefail
cd "$(dirname "$0")/.."
source benches/lib.sh
command -v wrk >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk; }
seconds=${SECONDS_PER_RUN:-10}
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"; kill $(jobs -p) 2>/dev/null || true' EXIT
cargo build --release -q -p gateway --bin vane

case=monitor/tests/quality-cases/q02_covariate_shift_miscalibrated
repo="$scratch/deploy"
mkdir -p "$repo/deploy" "$repo/models" "$repo/data"
cp tests/e2e/quality-models/pass_through.onnx "$repo/models/"
cp "$case/reference.csv" "$repo/data/q02.csv"
cat >"$repo/deploy/q02.yaml" <<YAML
apiVersion: vane.dev/v1alpha1
kind: ModelDeployment
metadata:
  name: q02
spec:
  versions:
    - version: 1
      model: {path: models/pass_through.onnx, sha256: $(sha256sum "$repo/models/pass_through.onnx" | cut -d' ' -f1)}
  reference_data: {path: data/q02.csv, sha256: $(sha256sum "$repo/data/q02.csv" | cut -d' ' -f1)}
  monitoring:
    window_size: 1000
    min_samples: 100
    thresholds: {psi: 0.2, dataset_drift_share: 0.5, estimated_accuracy: 0.7, multivariate_z: 3, data_unseen_category_share: 0.05, data_out_of_range_share: 0.05}
    quality:
      task: binary_classification
      output: score
      estimate: {label_column: y_true, score_column: y_pred_proba, prediction_column: y_pred, calibration: auto}
YAML
git -C "$repo" init -q -b main
git -C "$repo" -c user.name=bench -c user.email=bench@vane.invalid add -A
git -C "$repo" -c user.name=bench -c user.email=bench@vane.invalid commit -qm "q02, monitored"

# wrk sends the current file's rows in turn, one a request.
python3 - "$case/current.csv" >"$scratch/post.lua" <<'PY'
import csv, json, sys
rows = list(csv.DictReader(open(sys.argv[1])))[:500]
bodies = []
for r in rows:
    inputs = [{"name": f"x{i}", "shape": [1], "datatype": "FP64", "data": [float(r[f"x{i}"]) if r[f"x{i}"] else None]}
              for i in range(6)]
    inputs += [{"name": c, "shape": [1], "datatype": "BYTES", "data": [r[c]]} for c in ("cat", "region")]
    inputs.append({"name": "y_pred_proba", "shape": [1], "datatype": "FP64", "data": [float(r["y_pred_proba"])]})
    bodies.append(json.dumps({"inputs": inputs}).replace("null", '"NaN"'))
print('wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\nlocal bodies = {')
for b in bodies:
    print("  [[" + b + "]],")
print("}\nlocal i = 0\nrequest = function()\n  i = i % #bodies + 1\n  return wrk.format(nil, nil, nil, bodies[i])\nend")
PY

run() { # $1: extra flags; prints "requests/s cpu_us_per_request"
  STATE_DIRECTORY="$scratch/state-$RANDOM" target/release/vane serve --repo "$repo" --listen 127.0.0.1:0 \
    --grpc-listen off --log-format json $1 >/dev/null 2>"$scratch/err" &
  local pid=$! addr
  addr=$(serving_addr "$scratch/err")
  # Listening comes before the first sync has loaded the model: wait for it to be ready (bounded at 30 s).
  for _ in $(seq 1 300); do curl -sf "http://$addr/v2/models/q02/ready" >/dev/null && break; sleep 0.1; done
  curl -sf "http://$addr/v2/models/q02/ready" >/dev/null || { echo "q02 never became ready: $(cat "$scratch/err")" >&2; exit 1; }
  local before; before=$(cpu_ticks "$pid")
  wrk -t2 -c64 -d"${seconds}s" -s "$scratch/post.lua" "http://$addr/v2/models/q02/infer" >"$scratch/wrk"
  local ticks=$(( $(cpu_ticks "$pid") - before ))
  awk -v ticks="$ticks" -v hz="$(getconf CLK_TCK)" \
    '/requests in/ {n = $1} /Requests\/sec/ {rps = $2} END {printf "%s %.1f\n", rps, ticks / hz * 1e6 / n}' "$scratch/wrk"
  grep -q "Non-2xx" "$scratch/wrk" && { echo "non-2xx answers: $(cat "$scratch/wrk")" >&2; exit 1; }
  if [ -z "$1" ]; then # monitoring on: show that it saw the traffic and estimated
    curl -s "http://$addr/metrics" | grep -E '^vane_monitor_observations(_dropped)?_total|^vane_estimated_quality.*accuracy|^vane_multivariate_drift.*"z"' >&2
  fi
  kill "$pid"; wait "$pid" 2>/dev/null || true
}

on=(); off=()
for _ in 1 2 3 4 5; do
  on+=("$(run "")")
  off+=("$(run --no-monitoring)")
done
m_on=$(median $(column 1 "${on[@]}")); m_off=$(median $(column 1 "${off[@]}"))
c_on=$(median $(column 2 "${on[@]}")); c_off=$(median $(column 2 "${off[@]}"))
echo "monitoring on: $(column 1 "${on[@]}" | tr '\n' ' ')req/s (median $m_on); CPU $(column 2 "${on[@]}" | tr '\n' ' ')us/prediction (median $c_on)"
echo "--no-monitoring: $(column 1 "${off[@]}" | tr '\n' ' ')req/s (median $m_off); CPU $(column 2 "${off[@]}" | tr '\n' ' ')us/prediction (median $c_off)"
python3 -c "print(f'throughput on/off = {$m_on / $m_off:.3f}; server CPU per prediction on/off = {$c_on / $c_off:.3f} ({$c_on - $c_off:+.1f} us)')"
