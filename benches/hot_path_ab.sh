#!/usr/bin/env bash
# The hot path's functions before and after a change, measured in one run: `bash benches/hot_path_ab.sh BASE [FILTER]`
# builds the criterion bench `hot_path` at BASE (a commit) and at the working tree, then runs the two binaries in
# turn (ROUNDS, default 5, of 2 s per function each) so the machine's drift hits both, and prints each function's
# median time per side and after/before. FILTER (default 'decode/|encode/|batch/') picks the functions, as
# criterion's filter does. Criterion's own comparison with a saved baseline runs the two sides minutes apart; on
# these machines that alone moved untouched functions by 20-40%.
set -euo pipefail
base_rev=${1:?usage: benches/hot_path_ab.sh BASE [FILTER]}
filter=${2:-decode/|encode/|batch/}
rounds=${ROUNDS:-5}
cd "$(dirname "$0")/.."
root=$PWD
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

python3 - "$scratch" "$filter" "$rounds" "$base_rev" <<'EOF'
import collections, re, statistics, subprocess, sys
scratch, filt, rounds, base = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
unit = {"ns": 1, "µs": 1e3, "ms": 1e6, "s": 1e9}
times = collections.defaultdict(lambda: {"before": [], "after": []})
for _ in range(rounds):
    for side in ("before", "after"):
        out = subprocess.run(
            [f"{scratch}/{side}", "--bench", filt, "--measurement-time", "2", "--warm-up-time", "1", "--noplot"],
            capture_output=True, text=True, cwd=f"{scratch}/work", check=True).stdout
        for m in re.finditer(r"^(\S+)\s+time:\s+\[\S+ \S+ (\S+) (\S+) \S+ \S+\]", out, re.M):
            times[m.group(1)][side].append(float(m.group(2)) * unit[m.group(3)])
print(f"before = {base}, after = the working tree; median of {rounds} alternating runs each")
for name, sides in times.items():
    b, a = statistics.median(sides["before"]), statistics.median(sides["after"])
    print(f"{name:40s} before {b:10.1f} ns  after {a:10.1f} ns  after/before {a / b:.2f}")
EOF
