#!/usr/bin/env bash
# The hot path's functions before and after a change, in instructions: `bash benches/hot_path_ab.sh BASE` builds the
# criterion bench `hot_path` at BASE (a commit) and at the working tree, runs each decode and encode function of both
# under valgrind's callgrind (criterion's --profile-time, 1 s), and prints the instructions per iteration (the
# bench loop's inclusive count over the calls of the function it measures) before and after, and their ratio.
# Instruction counts are deterministic to well under 1%; wall-clock A/B runs of the same two binaries on these
# machines gave ratios from 0.7 to 1.3 for the same function from one run to the next. Instructions are not time
# (a cache miss is one instruction), so a change that moves memory differently still wants the wall clock.
set -euo pipefail
base_rev=${1:?usage: benches/hot_path_ab.sh BASE}
cd "$(dirname "$0")/.."
root=$PWD
command -v valgrind >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq valgrind; }
scratch=$(mktemp -d)
trap 'git worktree remove --force "$scratch/base" 2>/dev/null || true; rm -rf "$scratch"' EXIT

bench_binary() { # prints the path of the hot_path bench binary cargo just built (run in the tree to build)
  CARGO_TARGET_DIR="$root/target" cargo bench --bench hot_path --no-run --message-format json 2>/dev/null |
    python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "hot_path" and m.get("executable"):
        print(m["executable"])'
}

# Both builds share this target directory, so the dependencies are built once.
git worktree add -q --detach "$scratch/base" "$base_rev"
cp "$(cd "$scratch/base" && bench_binary)" "$scratch/before"
cp "$(bench_binary)" "$scratch/after"
mkdir "$scratch/work"

python3 - "$scratch" "$base_rev" <<'EOF'
import re, subprocess, sys
scratch, base = sys.argv[1], sys.argv[2]
# Each bench function and the gateway function its loop calls once per iteration.
functions = [
    ("decode/breast_cancer/", "gateway::protocol::decode_request"),
    ("decode/breast_cancer_binary/", "gateway::protocol::decode_request"),
    ("decode/dense/", "gateway::protocol::decode_request"),
    ("decode/dense_binary/", "gateway::protocol::decode_request"),
    ("encode/breast_cancer", "gateway::protocol::encode_response"),
    ("encode/dense", "gateway::protocol::encode_response"),
]
ITER = "criterion::bencher::Bencher<M>::iter"

def per_iteration(side, name, probe):
    out = f"{scratch}/cg.{side}"
    subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", f"{scratch}/{side}", "--bench",
                    "^" + re.escape(name), "--profile-time", "1"], cwd=f"{scratch}/work", check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    tree = subprocess.run(["callgrind_annotate", "--inclusive=yes", "--tree=caller", out], capture_output=True,
                          text=True, check=True).stdout
    number = lambda s: int(s.replace(",", ""))
    loop = number(re.search(r"^\s*([\d,]+) \([^)]*\)\s+\*\s+\S*?" + re.escape(ITER) + r" ", tree, re.M).group(1))
    calls = number(re.search(r"<\s+\S*?" + re.escape(ITER) + r" \(([\d,]+)x\).*\n[^\n]*\*\s+\S*?" + re.escape(probe) +
                             r" ", tree).group(1))
    return loop / calls

print(f"instructions per iteration (callgrind); before = {base}, after = the working tree")
for name, probe in functions:
    b, a = per_iteration("before", name, probe), per_iteration("after", name, probe)
    print(f"{name:32s} before {b:10.0f}  after {a:10.0f}  after/before {a / b:.3f}")
EOF
