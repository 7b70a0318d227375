#!/usr/bin/env python3
"""Make the pass-through models that replay the public drift cases through Vane's live path.

Run from anywhere:  python3 -m venv /tmp/mk && /tmp/mk/bin/pip install onnx==1.23.0 numpy==2.4.6 \
                     && /tmp/mk/bin/python models/make_drift_models.py

For each case in monitor/tests/drift-cases, one model whose inputs are the case's columns, named as the columns
(FP64 [-1] for numeric and binary columns, BYTES [-1] for categorical ones, as expected.json's `kind` says), and
whose outputs are the same values (`<column>_out`, Identity). Served with the case's reference.csv as its reference
data, the model's inputs are exactly the columns the monitor watches, so replaying current.csv as prediction traffic
must give the statistics in expected.json. The outputs are committed to tests/e2e/drift-models/; building or testing
Vane never runs this script.
"""
import json
import pathlib

import onnx
from onnx import TensorProto, helper

ROOT = pathlib.Path(__file__).resolve().parent.parent
CASES = ROOT / "monitor" / "tests" / "drift-cases"
OUT = ROOT / "tests" / "e2e" / "drift-models"


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    for case in sorted(p for p in CASES.iterdir() if (p / "expected.json").is_file()):
        expected = json.loads((case / "expected.json").read_text())
        columns = expected["column_order"]
        kinds = {c: expected["columns"][c]["kind"] for c in columns}
        types = {c: TensorProto.STRING if kinds[c] == "categorical" else TensorProto.DOUBLE for c in columns}
        inputs = [helper.make_tensor_value_info(c, types[c], ["batch"]) for c in columns]
        outputs = [helper.make_tensor_value_info(f"{c}_out", types[c], ["batch"]) for c in columns]
        nodes = [helper.make_node("Identity", [c], [f"{c}_out"]) for c in columns]
        graph = helper.make_graph(nodes, case.name, inputs, outputs)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="vane-make-models")
        model.ir_version = 8  # what ONNX Runtime 1.31 reads (onnx 1.23 stamps 14)
        onnx.checker.check_model(model)
        (OUT / f"{case.name}.onnx").write_bytes(model.SerializeToString())


if __name__ == "__main__":
    main()
