#!/usr/bin/env python3
"""Write two public drift cases as Parquet, to test that Parquet and CSV inputs give the same reports.

Run: python3 -m venv /tmp/pq && /tmp/pq/bin/pip install pyarrow==26.0.1 pandas==3.1.1 && /tmp/pq/bin/python \
     monitor/tests/parquet/make.py

p02 (string categories, 0/1 integers, integer counts) is written with snappy (pandas' default codec); p03 (empty
cells, read as nulls) with zstd (polars' default). The outputs are committed; tests never run this script.
"""
import pathlib

import pandas as pd

HERE = pathlib.Path(__file__).resolve().parent
CASES = HERE.parent / "drift-cases"

for case, codec in [("p02_categorical_and_integers", "snappy"), ("p03_missing_and_constant", "zstd")]:
    for side in ("reference", "current"):
        # An empty cell is missing and nothing else is: no "NA"/"null" tokens.
        frame = pd.read_csv(CASES / case / f"{side}.csv", keep_default_na=False, na_values=[""])
        frame.to_parquet(HERE / f"{case}.{side}.parquet", engine="pyarrow", compression=codec, index=False)
