"""Times Evidently's DataDriftPreset on the same files `vane drift` reads (run in a throwaway venv with
evidently==0.7.23 and pandas<3; Evidently is never a dependency of Vane). Prints the seconds from reading the CSVs
to a finished report, the part `vane drift` does too (imports excluded).

Usage: evidently_run.py DIR
"""

import sys
import time

import pandas as pd
from evidently import DataDefinition, Dataset, Report
from evidently.presets import DataDriftPreset

folder = sys.argv[1]
start = time.perf_counter()
ref = pd.read_csv(f"{folder}/reference.csv")
cur = pd.read_csv(f"{folder}/current.csv")
numeric = [c for c in ref.columns if c.startswith("num_")]
categorical = [c for c in ref.columns if not c.startswith("num_")]
definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
snapshot = Report([DataDriftPreset()]).run(
    current_data=Dataset.from_pandas(cur, data_definition=definition),
    reference_data=Dataset.from_pandas(ref, data_definition=definition),
)
snapshot.dict()
print(f"{time.perf_counter() - start:.3f}")
