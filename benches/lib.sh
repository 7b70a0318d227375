# Helpers shared by the shell benches (sourced, not run).

# Writes the wrk script of the benches' request: batch-1 JSON to breast_cancer, row 0 of its reference data.
write_post_lua() { # $1: the file to write
  local row; row=$(sed -n 2p models/breast_cancer/reference.csv)
  cat > "$1" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"inputs":[{"name":"input","shape":[1,30],"datatype":"FP32","data":[$row]}]}'
LUA
}

# A process's CPU time (user + system) in clock ticks.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }

# Waits (at most 30 s) for `vane serve --log-format json` to log "vane is serving" to $1 and prints its address.
serving_addr() { # $1: the server's stderr file
  local addr=""
  for _ in $(seq 1 300); do
    addr=$(grep 'vane is serving' "$1" | grep -o '"addr":"[^"]*"' | sed 's/"addr":"//; s/"$//') || true
    [ -n "$addr" ] && break
    sleep 0.1
  done
  [ -n "$addr" ] || { echo "vane did not start: $(cat "$1")" >&2; return 1; }
  echo "$addr"
}

# The median of three numbers.
median3() { printf '%s\n' "$@" | sort -n | sed -n 2p; }

# The median of five numbers.
median() { printf '%s\n' "$@" | sort -n | sed -n 3p; }

# Field $1 (space-separated) of each further argument, one a line.
column() { local k=$1; shift; for x in "$@"; do echo "$x" | cut -d' ' -f"$k"; done; }

# The binary tensor extension's request for batch 1 of row 0 of model $1's reference data: writes $2.row (the row as
# CSV), $2.bin (the body), $2.len (its JSON header's length), and beside them binary.lua, the wrk script that sends
# the file $BODY_FILE with the header length $HEADER_LENGTH.
write_binary_request() { # $1: the model, $2: the files' path without extension
  sed -n 2p "models/$1/reference.csv" >"$2.row"
  python3 - "$2" <<'PY'
import json, struct, sys
row = [float(v) for v in open(sys.argv[1] + ".row").read().strip().split(",")]
header = json.dumps({"inputs": [{"name": "input", "shape": [1, len(row)], "datatype": "FP32",
                                 "parameters": {"binary_data_size": 4 * len(row)}}],
                     "parameters": {"binary_data_output": True}}).encode()
open(sys.argv[1] + ".bin", "wb").write(header + struct.pack(f"<{len(row)}f", *row))
open(sys.argv[1] + ".len", "w").write(str(len(header)))
PY
  cat >"$(dirname "$2")/binary.lua" <<'LUA'
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/octet-stream"
wrk.headers["Inference-Header-Content-Length"] = os.getenv("HEADER_LENGTH")
local f = assert(io.open(os.getenv("BODY_FILE"), "rb"))
wrk.body = f:read("*a")
f:close()
LUA
}
