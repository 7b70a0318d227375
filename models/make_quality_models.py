#!/usr/bin/env python3
"""Make the pass-through models that replay the quality cases (estimated quality, multivariate drift) through
Vane's live path.

Run from anywhere:  python3 -m venv /tmp/mk && /tmp/mk/bin/pip install onnx==1.23.0 numpy==2.4.6 \
                     && /tmp/mk/bin/python models/make_quality_models.py

One model for all three cases in monitor/tests/quality-cases (they share their columns): its inputs are the
features x0..x5 (FP64 [-1]), cat and region (BYTES [-1]) and the model's score y_pred_proba (FP64 [-1]); its output
`score` is that score (Identity). Served with a case's reference.csv, whose y_true, y_pred_proba and y_pred columns
the manifest names as the label, score and prediction (so not features), replaying current.csv as traffic makes the
monitor see the case's current features and scores. The output is committed to tests/e2e/quality-models/; building
or testing Vane never runs this script.

A second model, `text_inputs.onnx`, takes `x` (a number in the reference), `colour` (a category) and `flag` (0 or
1) all as BYTES [-1] and returns `x` as `x_out`: text inputs let a test send cells of the wrong type (a word where a
number belongs, 0.5 in a binary column) through the live path to the data-quality checks.
"""
import pathlib

import onnx
from onnx import TensorProto, helper

ROOT = pathlib.Path(__file__).resolve().parent.parent
OUT = ROOT / "tests" / "e2e" / "quality-models"
NUMERIC = [f"x{i}" for i in range(6)]
CATEGORICAL = ["cat", "region"]


def main() -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    inputs = [helper.make_tensor_value_info(c, TensorProto.DOUBLE, ["batch"]) for c in NUMERIC]
    inputs += [helper.make_tensor_value_info(c, TensorProto.STRING, ["batch"]) for c in CATEGORICAL]
    inputs.append(helper.make_tensor_value_info("y_pred_proba", TensorProto.DOUBLE, ["batch"]))
    outputs = [helper.make_tensor_value_info("score", TensorProto.DOUBLE, ["batch"])]
    nodes = [helper.make_node("Identity", ["y_pred_proba"], ["score"])]
    graph = helper.make_graph(nodes, "quality_pass_through", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="vane-make-models")
    model.ir_version = 8  # what ONNX Runtime 1.31 reads (onnx 1.23 stamps 14)
    onnx.checker.check_model(model)
    (OUT / "pass_through.onnx").write_bytes(model.SerializeToString())

    text = ["x", "colour", "flag"]
    inputs = [helper.make_tensor_value_info(c, TensorProto.STRING, ["batch"]) for c in text]
    outputs = [helper.make_tensor_value_info("x_out", TensorProto.STRING, ["batch"])]
    graph = helper.make_graph([helper.make_node("Identity", ["x"], ["x_out"])], "text_inputs", inputs, outputs)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="vane-make-models")
    model.ir_version = 8
    onnx.checker.check_model(model)
    (OUT / "text_inputs.onnx").write_bytes(model.SerializeToString())


if __name__ == "__main__":
    main()
