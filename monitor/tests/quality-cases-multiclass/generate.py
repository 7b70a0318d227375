"""A multiclass quality case: NannyML 0.13.1's CBPE for a three-class classifier (one-vs-rest), computed by NannyML
itself on seeded synthetic data, to hold `vane drift --classification label=...,score=A:B:C,classes=a:b:c,...
--estimated-quality isotonic` to.

Usage: python generate.py OUT_DIR   (a venv with nannyml==0.13.1; set NML_DISABLE_USAGE_LOGGING=1)

What the numbers mean (NannyML's multiclass CBPE): classes in sorted order; per class, an isotonic regression of
"the label is this class" on that class's score, fitted on the reference (the calibration is forced here, as in
../quality-cases/generate.py); each row's calibrated probabilities divided by their sum (uniform when the sum is 0);
then per class the binary estimates of ../quality-cases/README.md with the row predicted as that class or not, and
the estimated ROC AUC ordering rows by the class's raw score; each metric is the mean over classes (macro), except
accuracy, the mean over rows of the calibrated probability of the predicted class.
"""
import json
import os
import sys

import numpy as np
import pandas as pd

import nannyml
import nannyml.performance_estimation.confidence_based.cbpe as cbpe_mod
from nannyml import CBPE

METRICS = ["roc_auc", "f1", "precision", "recall", "specificity", "accuracy"]
CLASSES = ["a", "b", "c"]


def frame(rng, n, shift):
    z = rng.normal(size=(n, 4))
    z[:, 0] += shift
    logits = np.stack([1.0 * z[:, 0] - 0.5 * z[:, 1], 0.8 * z[:, 1] + 0.3 * z[:, 2], -0.6 * z[:, 0] + 0.7 * z[:, 3]], 1)
    p_true = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    y = np.array([rng.choice(3, p=p) for p in p_true])
    noisy = 1.5 * logits + rng.normal(scale=0.5, size=logits.shape)  # overconfident, noisy scores
    scores = np.exp(noisy) / np.exp(noisy).sum(1, keepdims=True)
    scores = np.round(scores, 12)
    df = pd.DataFrame({f"x{i}": np.round(z[:, i], 6) for i in range(4)})
    df["y_true"] = [CLASSES[k] for k in y]
    for k, c in enumerate(CLASSES):
        df[f"proba_{c}"] = scores[:, k]
    df["y_pred"] = [CLASSES[k] for k in scores.argmax(1)]
    return df


def main(out):
    rng = np.random.default_rng(21)
    ref, cur = frame(rng, 4000, 0.0), frame(rng, 2500, 0.6)
    for df in (ref, cur):
        for c in CLASSES:
            assert df[f"proba_{c}"].is_unique, "tied scores"
    cbpe_mod.needs_calibration = lambda *a, **k: True
    est = CBPE(y_pred_proba={c: f"proba_{c}" for c in CLASSES}, y_pred="y_pred", y_true="y_true",
               problem_type="classification_multiclass", metrics=METRICS, chunk_number=1)
    est.fit(ref)
    res = est.estimate(cur.drop(columns=["y_true"])).to_df()
    res = res[res[("chunk", "period")] == "analysis"]
    estimated = {m: float(res[(m, "value")].iloc[0]) for m in METRICS}
    d = os.path.join(out, "m01_three_classes_shift")
    os.makedirs(d, exist_ok=True)
    ref.to_csv(os.path.join(d, "reference.csv"), index=False)
    cur.to_csv(os.path.join(d, "current.csv"), index=False)
    expected = {"nannyml_version": nannyml.__version__, "calibration": "isotonic", "classes": CLASSES,
                "columns": {"label": "y_true", "prediction": "y_pred", "scores": [f"proba_{c}" for c in CLASSES]},
                "estimated_quality": estimated}
    with open(os.path.join(d, "expected.json"), "w") as f:
        json.dump(expected, f, indent=2, sort_keys=True)
        f.write("\n")
    print(json.dumps(estimated))


if __name__ == "__main__":
    main(sys.argv[1])
