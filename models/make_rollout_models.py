#!/usr/bin/env python3
"""Make the rollout candidates: breast_cancer version 2 changed in one way each, so a rollout has something to judge.

Run from anywhere:  python3 -m venv /tmp/mk && /tmp/mk/bin/pip install onnx==1.23.0 numpy==2.4.6 \
                     && /tmp/mk/bin/python models/make_rollout_models.py

Each candidate takes and gives what breast_cancer takes and gives (input FP32 [-1, 30]; label INT64 [-1],
probabilities FP32 [-1, 2]), so a rollout can send the same requests to it and to the stable version:
  wrong.onnx    the opposite class: label 1 - label, the two probabilities swapped (agreement 0, accuracy 1 - v2's)
  failing.onnx  fails (an out-of-range Gather) on every row whose first feature (mean radius) is above 15; the same
                answers as v2 otherwise
  slow.onnx     the same answers as v2, after four hundred 512 x 512 matrix products per row that feed nothing (their sum
                is multiplied by 0 and added), so it is many times slower
The outputs are committed to tests/e2e/rollout-models/; building or testing Vane never runs this script.
"""
import pathlib

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

ROOT = pathlib.Path(__file__).resolve().parent.parent
SOURCE = ROOT / "models" / "breast_cancer" / "2" / "model.onnx"
OUT = ROOT / "tests" / "e2e" / "rollout-models"
SEED = 20261201


def base() -> onnx.ModelProto:
    """Version 2 with its outputs renamed label_raw and probabilities_raw, for the candidate to rewire."""
    model = onnx.load(SOURCE)
    renames = {"label": "label_raw", "probabilities": "probabilities_raw"}
    for node in model.graph.node:
        node.output[:] = [renames.get(o, o) for o in node.output]
        node.input[:] = [renames.get(i, i) for i in node.input]
    del model.graph.output[:]
    return model


def finish(model: onnx.ModelProto, name: str) -> None:
    model.graph.output.extend(
        [
            helper.make_tensor_value_info("label", TensorProto.INT64, [None]),
            helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, 2]),
        ]
    )
    model.ir_version = 8  # what ONNX Runtime 1.31 reads (onnx 1.23 stamps 14)
    onnx.checker.check_model(model)
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.onnx").write_bytes(model.SerializeToString())


def const(model: onnx.ModelProto, name: str, value: np.ndarray) -> str:
    model.graph.initializer.append(numpy_helper.from_array(value, name))
    return name


def wrong() -> None:
    model = base()
    g = model.graph
    one = const(model, "one_i64", np.array(1, dtype=np.int64))
    swap = const(model, "swap_idx", np.array([1, 0], dtype=np.int64))
    g.node.extend(
        [
            helper.make_node("Sub", [one, "label_raw"], ["label"]),
            helper.make_node("Gather", ["probabilities_raw", swap], ["probabilities"], axis=1),
        ]
    )
    finish(model, "wrong")


def failing() -> None:
    model = base()
    g = model.graph
    starts = const(model, "col0_start", np.array([0], dtype=np.int64))
    ends = const(model, "col0_end", np.array([1], dtype=np.int64))
    axes = const(model, "col0_axis", np.array([1], dtype=np.int64))
    limit = const(model, "radius_limit", np.array(15.0, dtype=np.float32))
    seven = const(model, "seven", np.array(7, dtype=np.int64))
    table = const(model, "one_row", np.array([0.0], dtype=np.float32))
    g.node.extend(
        [
            helper.make_node("Slice", ["input", starts, ends, axes], ["radius"]),
            helper.make_node("Greater", ["radius", limit], ["too_big"]),
            helper.make_node("Cast", ["too_big"], ["too_big_i64"], to=TensorProto.INT64),
            # Index 7 into a one-element table: ONNX Runtime refuses it ("indices element out of data bounds").
            helper.make_node("Mul", ["too_big_i64", seven], ["index"]),
            helper.make_node("Gather", [table, "index"], ["zeros"], axis=0),
            helper.make_node("Add", ["probabilities_raw", "zeros"], ["probabilities"]),
            helper.make_node("Identity", ["label_raw"], ["label"]),
        ]
    )
    finish(model, "failing")


def slow() -> None:
    model = base()
    g = model.graph
    rng = np.random.default_rng(SEED)
    width, layers = 512, 400
    first = const(model, "slow_w_in", (rng.standard_normal((30, width)) / np.sqrt(30)).astype(np.float32))
    # One square weight reused by every layer keeps the file small (1 MiB) and the work large.
    square = const(model, "slow_w", (rng.standard_normal((width, width)) / np.sqrt(width)).astype(np.float32))
    g.node.extend([helper.make_node("MatMul", ["input", first], ["slow_z_in"]), helper.make_node("Tanh", ["slow_z_in"], ["slow_h0"])])
    for i in range(layers):
        g.node.extend(
            [
                helper.make_node("MatMul", [f"slow_h{i}", square], [f"slow_z{i}"]),
                helper.make_node("Tanh", [f"slow_z{i}"], [f"slow_h{i + 1}"]),
            ]
        )
    zero = const(model, "slow_zero", np.array(0.0, dtype=np.float32))
    g.node.extend(
        [
            helper.make_node("ReduceSum", [f"slow_h{layers}"], ["slow_sum"], keepdims=1),
            helper.make_node("Mul", ["slow_sum", zero], ["slow_nothing"]),
            helper.make_node("Add", ["probabilities_raw", "slow_nothing"], ["probabilities"]),
            helper.make_node("Identity", ["label_raw"], ["label"]),
        ]
    )
    finish(model, "slow")


def main() -> None:
    wrong()
    failing()
    slow()


if __name__ == "__main__":
    main()
