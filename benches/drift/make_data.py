"""Writes a reference and a current CSV of ROWS rows x 20 columns (14 numeric, 4 categorical, 2 binary) for the
`vane drift` vs Evidently speed comparison. Standard library only; seeded, so every run writes the same files.
Half the numeric columns drift in current (shift, scale, heavy tail); categoricals shift their frequencies; 1% of
cells are missing.

Usage: make_data.py OUT_DIR [ROWS]
"""

import os
import random
import sys

out = sys.argv[1]
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
os.makedirs(out, exist_ok=True)
NUMERIC = [f"num_{i:02d}" for i in range(14)]
CATEGORICAL = [f"cat_{i}" for i in range(4)]
BINARY = ["bin_0", "bin_1"]
LEVELS = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta"]


def write(path, seed, drifted):
    rng = random.Random(seed)
    with open(path, "w") as f:
        f.write(",".join(NUMERIC + CATEGORICAL + BINARY) + "\n")
        for _ in range(rows):
            cells = []
            for i, _name in enumerate(NUMERIC):
                shift = 0.3 * (i % 3) if drifted and i < 7 else 0.0
                scale = 1.5 if drifted and i == 6 else 1.0
                cells.append("%.5f" % (rng.gauss(10 * i + shift, scale * (1 + i / 7))))
            for i, _name in enumerate(CATEGORICAL):
                weights = [1 + j * (2 if drifted and i < 2 else 1) for j in range(len(LEVELS) - i)]
                cells.append(rng.choices(LEVELS[: len(weights)], weights)[0])
            for i, _name in enumerate(BINARY):
                p = 0.3 + (0.1 if drifted and i == 0 else 0.0)
                cells.append("1" if rng.random() < p else "0")
            cells = ["" if rng.random() < 0.01 else c for c in cells]
            f.write(",".join(cells) + "\n")


write(os.path.join(out, "reference.csv"), 1, False)
write(os.path.join(out, "current.csv"), 2, True)
