"""Times NannyML 0.13.1 doing what `vane drift --classification ... --estimated-quality isotonic --multivariate`
adds: CBPE (isotonic calibration, the six metrics, the current file as one chunk) and the PCA data-reconstruction
error over the 20 features, on the same files (run in a throwaway venv; NannyML is never a dependency of Vane).
Prints the seconds from reading the CSVs to both results (imports excluded). NannyML's random calibration test is
replaced by the fixed choice, as in shared/quality-cases/generate.py, so both sides calibrate.

Usage: nannyml_run.py DIR
"""

import os
import sys
import time

os.environ.setdefault("NML_DISABLE_USAGE_LOGGING", "1")
import warnings  # noqa: E402

import pandas as pd  # noqa: E402
import nannyml.performance_estimation.confidence_based.cbpe as cbpe_mod  # noqa: E402
from nannyml import CBPE, DataReconstructionDriftCalculator  # noqa: E402

folder = sys.argv[1]
warnings.filterwarnings("ignore", message="The resulting number of chunks is too low")
cbpe_mod.needs_calibration = lambda *a, **k: True
start = time.perf_counter()
ref = pd.read_csv(f"{folder}/reference.csv")
cur = pd.read_csv(f"{folder}/current.csv")
features = [c for c in ref.columns if c.startswith(("num_", "cat_"))]
estimator = CBPE(y_pred_proba="y_pred_proba", y_pred="y_pred", y_true="y_true", problem_type="classification_binary",
                 metrics=["roc_auc", "f1", "precision", "recall", "specificity", "accuracy"], chunk_number=1)
estimator.fit(ref)
estimated = estimator.estimate(cur.drop(columns=["y_true"])).to_df()
drift = DataReconstructionDriftCalculator(column_names=features, chunk_number=1)
drift.fit(ref)
reconstructed = drift.calculate(cur).to_df()
print(f"{time.perf_counter() - start:.3f}")
analysis = estimated[estimated[("chunk", "period")] == "analysis"]
errors = reconstructed[reconstructed[("chunk", "period")] == "analysis"]
print(f"accuracy={float(analysis[('accuracy', 'value')].iloc[0]):.6f} "
      f"reconstruction_error={float(errors[('reconstruction_error', 'value')].iloc[0]):.6f}", file=sys.stderr)
