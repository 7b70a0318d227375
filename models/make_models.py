#!/usr/bin/env python3
"""Make the ONNX models, reference data and expected outputs that Vane's demo and tests use.

Run from anywhere:  python3 -m venv /tmp/mk && /tmp/mk/bin/pip install -r models/requirements.txt \
                     && /tmp/mk/bin/python models/make_models.py

Everything is seeded, so a rerun with the pinned packages (requirements.txt) gives the same files. The outputs are
committed, so building or testing Vane never needs this script or its Python stack.

Layout written (Triton-style, what `vane serve --model-dir models` reads):
  <model>/<version>/model.onnx    the model
  <model>/reference.csv           the features it was trained on (the monitor's baseline)
  expected_outputs.json           a few rows per model and what Python onnxruntime answered for them
"""
import json
import pathlib

import numpy as np
import onnx
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper
from skl2onnx import to_onnx
from skl2onnx.common.data_types import FloatTensorType
from sklearn.datasets import load_breast_cancer, load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.neural_network import MLPClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

HERE = pathlib.Path(__file__).resolve().parent
SEED = 20261127
OPSET = 17
IR_VERSION = 8


def save(model: onnx.ModelProto, name: str, version: int) -> pathlib.Path:
    # onnx 1.23 stamps IR version 14, newer than ONNX Runtime 1.31 reads (13); opset 17 needs only IR 8.
    model.ir_version = min(model.ir_version, IR_VERSION)
    onnx.checker.check_model(model)
    path = HERE / name / str(version) / "model.onnx"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())
    return path


def write_reference(name: str, header: list[str], rows: np.ndarray, fmt: str) -> None:
    path = HERE / name / "reference.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    # numpy writes the header with a leading "# " unless comments="" is given.
    np.savetxt(path, rows, delimiter=",", header=",".join(header), comments="", fmt=fmt)


def sklearn_classifier(estimator, x: np.ndarray) -> onnx.ModelProto:
    # zipmap off: `probabilities` is a plain float32 [N, classes] tensor, not a list of maps.
    return to_onnx(
        estimator,
        initial_types=[("input", FloatTensorType([None, x.shape[1]]))],
        target_opset=OPSET,
        options={id(estimator): {"zipmap": False}},
    )


def breast_cancer() -> dict:
    data = load_breast_cancer()
    # The CSV keeps the dataset's own decimals; the float32 cast is what a client parsing them would send.
    write_reference("breast_cancer", [n.replace(" ", "_") for n in data.feature_names], data.data, "%.10g")
    x, y = data.data.astype(np.float32), data.target
    paths = {}
    # Two versions so versioned routes have something to choose from: v2 is less regularised than v1.
    for version, c in ((1, 0.05), (2, 1.0)):
        pipe = make_pipeline(StandardScaler(), LogisticRegression(C=c, max_iter=2000, random_state=SEED))
        pipe.fit(x, y)
        paths[version] = save(sklearn_classifier(pipe, x), "breast_cancer", version)
    return {"breast_cancer": (paths, {"input": x[[0, 1, 19, 100, 500]]})}


def digits() -> dict:
    data = load_digits()
    x, y = data.data.astype(np.float32), data.target
    write_reference("digits", [f"pixel_{i}" for i in range(64)], x, "%.0f")
    # Trained on the raw 0-16 pixel values, the same values the reference data holds and clients send.
    mlp = MLPClassifier(hidden_layer_sizes=(64,), max_iter=600, random_state=SEED)
    mlp.fit(x, y)
    model = sklearn_classifier(mlp, x)
    return {"digits": ({1: save(model, "digits", 1)}, {"input": x[[0, 1, 2, 3, 1000]]})}



def dense() -> dict:
    """A 1024-1024-1024-10 ReLU MLP (about 8.4 MB of float32 weights) with a dynamic batch dimension."""
    rng = np.random.default_rng(SEED)
    sizes = [1024, 1024, 1024, 10]
    nodes, inits = [], []
    prev = "input"
    for i, (fan_in, fan_out) in enumerate(zip(sizes, sizes[1:])):
        w = (rng.standard_normal((fan_in, fan_out)) * np.sqrt(2.0 / fan_in)).astype(np.float32)
        b = (rng.standard_normal(fan_out) * 0.01).astype(np.float32)
        inits += [numpy_helper.from_array(w, f"w{i}"), numpy_helper.from_array(b, f"b{i}")]
        last = i == len(sizes) - 2
        out = "output" if last else f"h{i}"
        nodes.append(helper.make_node("Gemm", [prev, f"w{i}", f"b{i}"], [out if last else f"z{i}"]))
        if not last:
            nodes.append(helper.make_node("Relu", [f"z{i}"], [out]))
        prev = out
    graph = helper.make_graph(
        nodes,
        "dense_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 1024])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, ["batch", 10])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="vane-make-models")
    x = rng.standard_normal((200, 1024)).astype(np.float32)
    write_reference("dense", [f"f{i}" for i in range(1024)], x, "%.4f")
    # Expected outputs are computed from the rounded values the CSV holds, as a client reading it would send.
    x = np.loadtxt(HERE / "dense" / "reference.csv", delimiter=",", skiprows=1, dtype=np.float32)
    return {"dense": ({1: save(model, "dense", 1)}, {"input": x[[0, 1, 2]]})}


def dtypes() -> dict:
    """One input and one output per V2 datatype that ONNX models here take: FP64, INT32, INT64, BOOL and BYTES."""
    specs = [
        # (input, ONNX type, columns, node building the output)
        ("x_fp64", TensorProto.DOUBLE, 3, lambda: helper.make_node("Mul", ["x_fp64", "two_f64"], ["y_fp64"])),
        ("x_int32", TensorProto.INT32, 2, lambda: helper.make_node("Add", ["x_int32", "one_i32"], ["y_int32"])),
        ("x_int64", TensorProto.INT64, 2, lambda: helper.make_node("Add", ["x_int64", "one_i64"], ["y_int64"])),
        ("x_bool", TensorProto.BOOL, 2, lambda: helper.make_node("Not", ["x_bool"], ["y_bool"])),
        ("x_bytes", TensorProto.STRING, 1, lambda: helper.make_node("Identity", ["x_bytes"], ["y_bytes"])),
    ]
    inits = [
        numpy_helper.from_array(np.array(2.0, dtype=np.float64), "two_f64"),
        numpy_helper.from_array(np.array(1, dtype=np.int32), "one_i32"),
        numpy_helper.from_array(np.array(1, dtype=np.int64), "one_i64"),
    ]
    inputs = [helper.make_tensor_value_info(n, t, ["batch", c]) for n, t, c, _ in specs]
    outputs = [helper.make_tensor_value_info(n.replace("x_", "y_"), t, ["batch", c]) for n, t, c, _ in specs]
    graph = helper.make_graph([mk() for *_, mk in specs], "dtypes", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="vane-make-models")
    rows = {
        "x_fp64": np.array([[0.5, -1.25, 3.0], [1e-3, 2.5, -7.0]], dtype=np.float64),
        "x_int32": np.array([[1, -2], [2147483646, 0]], dtype=np.int32),
        "x_int64": np.array([[10, -20], [9007199254740990, 0]], dtype=np.int64),
        "x_bool": np.array([[True, False], [False, False]]),
        "x_bytes": np.array([["hello"], ["vané"]], dtype=object),
    }
    header = ["fp64_0", "fp64_1", "fp64_2", "int32_0", "int32_1", "int64_0", "int64_1", "bool_0", "bool_1", "bytes_0"]
    flat = np.concatenate([v.astype(object) for v in rows.values()], axis=1)
    model_path = save(model, "dtypes", 1)
    with open(HERE / "dtypes" / "reference.csv", "w", encoding="utf-8") as f:
        f.write(",".join(header) + "\n")
        for r in flat:
            f.write(",".join(str(v).lower() if isinstance(v, (bool, np.bool_)) else str(v) for v in r) + "\n")
    return {"dtypes": ({1: model_path}, rows)}


V2_TYPES = {
    np.dtype(np.float32): "FP32",
    np.dtype(np.float64): "FP64",
    np.dtype(np.int32): "INT32",
    np.dtype(np.int64): "INT64",
    np.dtype(np.bool_): "BOOL",
    np.dtype(object): "BYTES",
}


def tensor_json(name: str, value: np.ndarray) -> dict:
    return {
        "name": name,
        "datatype": V2_TYPES[value.dtype],
        "shape": list(value.shape),
        "data": [v if isinstance(v, str) else v.item() for v in value.reshape(-1)],
    }


def main() -> None:
    expected = {}
    for made in (breast_cancer(), digits(), dense(), dtypes()):
        for name, (paths, inputs) in made.items():
            for version, path in sorted(paths.items()):
                sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
                out_names = [o.name for o in sess.get_outputs()]
                outs = sess.run(out_names, inputs)
                expected[f"{name}/{version}"] = {
                    "model": name,
                    "version": str(version),
                    "inputs": [tensor_json(k, v) for k, v in inputs.items()],
                    "outputs": [tensor_json(k, np.asarray(v)) for k, v in zip(out_names, outs)],
                }
    with open(HERE / "expected_outputs.json", "w", encoding="utf-8") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")


if __name__ == "__main__":
    main()
