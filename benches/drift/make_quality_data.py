"""Writes a reference and a current CSV of ROWS rows x 20 features (16 numeric, 4 categorical) plus a binary
classifier's label (`y_true`), score (`y_pred_proba`) and predicted label (`y_pred`), for timing `vane drift
--estimated-quality --multivariate` beside NannyML's CBPE and data-reconstruction drift on the same files. Standard
library only; seeded, so every run writes the same files. The current file's first numeric features shift and two of
them stop following the first (multivariate drift), and its scores are as miscalibrated as the reference's.

Usage: make_quality_data.py OUT_DIR [ROWS]
"""

import math
import os
import random
import sys

out = sys.argv[1]
rows = int(sys.argv[2]) if len(sys.argv) > 2 else 200_000
os.makedirs(out, exist_ok=True)
NUMERIC = [f"num_{i:02d}" for i in range(16)]
CATEGORICAL = [f"cat_{i}" for i in range(4)]
LEVELS = ["alpha", "beta", "gamma", "delta", "epsilon"]


def write(path, seed, drifted):
    rng = random.Random(seed)
    with open(path, "w") as f:
        f.write(",".join(NUMERIC + CATEGORICAL + ["y_true", "y_pred_proba", "y_pred"]) + "\n")
        for _ in range(rows):
            z = [rng.gauss(0.0, 1.0) for _ in NUMERIC]
            follow = 0.2 if drifted else 0.9  # num_01 and num_02 follow num_00 in the reference only
            z[1] = follow * z[0] + math.sqrt(1 - follow * follow) * z[1]
            z[2] = follow * z[0] + math.sqrt(1 - follow * follow) * z[2]
            if drifted:
                z[0] += 0.5
                z[3] += 0.3
            cats = [rng.choices(LEVELS, [5, 4, 3, 2, 1] if not (drifted and i == 0) else [1, 2, 3, 4, 5])[0]
                    for i in range(len(CATEGORICAL))]
            logit = 1.2 * z[0] - 0.8 * z[3] + 0.5 * z[5] + (0.6 if cats[0] == "delta" else 0.0) - 0.1
            label = 1 if rng.random() < 1 / (1 + math.exp(-logit)) else 0
            score = (1 / (1 + math.exp(-(logit + rng.gauss(0.0, 0.6))))) ** 1.4
            cells = ["%.6f" % v for v in z] + cats
            cells = ["" if rng.random() < 0.01 else c for c in cells]
            f.write(",".join(cells + [str(label), "%.12f" % score, "1" if score >= 0.5 else "0"]) + "\n")


write(os.path.join(out, "reference.csv"), 11, False)
write(os.path.join(out, "current.csv"), 12, True)
