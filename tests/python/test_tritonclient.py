"""Triton's own Python clients (tritonclient 2.73, HTTP and gRPC) against a running Vane, unchanged.

Run by `cargo test` (tests/e2e/tritonclient.rs), which starts Vane on loopback, builds a venv with the packages in
tests/python/requirements.txt, and passes the addresses in VANE_HTTP / VANE_GRPC and the models folder in
VANE_MODELS. Every model in models/ is sent the inputs of models/expected_outputs.json, JSON and binary over HTTP and
over gRPC; each answer is compared with what Python's onnxruntime gives for the same inputs, run here.
"""
import json
import os
import pathlib
import unittest

import numpy as np
import onnxruntime as ort
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, np_to_triton_dtype

MODELS = pathlib.Path(os.environ["VANE_MODELS"])
HTTP = os.environ["VANE_HTTP"]
GRPC = os.environ["VANE_GRPC"]
FIXTURES = json.loads((MODELS / "expected_outputs.json").read_text())
NUMPY = {"FP32": np.float32, "FP64": np.float64, "INT32": np.int32, "INT64": np.int64, "BOOL": np.bool_,
         "BYTES": np.object_}


def fixture_inputs(fixture):
    """The fixture's inputs as numpy arrays, by name."""
    arrays = {}
    for tensor in fixture["inputs"]:
        dtype = NUMPY[tensor["datatype"]]
        values = tensor["data"] if dtype is not np.object_ else [v.encode() for v in tensor["data"]]
        arrays[tensor["name"]] = np.array(values, dtype=dtype).reshape(tensor["shape"])
    return arrays


def onnxruntime_outputs(model, version, arrays):
    """What onnxruntime answers for the same inputs, by output name."""
    session = ort.InferenceSession(str(MODELS / model / version / "model.onnx"), providers=["CPUExecutionProvider"])
    decode = np.vectorize(lambda b: b.decode("utf-8"), otypes=[object])
    feed = {k: (decode(v) if v.dtype == np.object_ else v) for k, v in arrays.items()}
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, feed)))


def assert_close(test, got, want, label):
    if want.dtype.kind in "fc":
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6, err_msg=label)
    elif want.dtype.kind in "OSU":
        test.assertEqual([g.decode() if isinstance(g, bytes) else g for g in got.ravel()],
                         [str(w) for w in want.ravel()], label)
    else:
        np.testing.assert_array_equal(got, want, err_msg=label)


class Health(unittest.TestCase):
    def test_server_and_models_over_both_protocols(self):
        for client in (httpclient.InferenceServerClient(HTTP), grpcclient.InferenceServerClient(GRPC)):
            self.assertTrue(client.is_server_live())
            self.assertTrue(client.is_server_ready())
            self.assertTrue(client.is_model_ready("breast_cancer"))
            self.assertTrue(client.is_model_ready("breast_cancer", "1"))
            self.assertFalse(client.is_model_ready("breast_cancer", "9"))
            self.assertFalse(client.is_model_ready("no_such_model"))
            metadata = client.get_server_metadata()
            extensions = metadata["extensions"] if isinstance(metadata, dict) else list(metadata.extensions)
            self.assertIn("binary_tensor_data", extensions)
            self.assertIn("model_repository", extensions)
            model = client.get_model_metadata("dense")
            inputs = model["inputs"] if isinstance(model, dict) else [
                {"name": i.name, "datatype": i.datatype, "shape": list(i.shape)} for i in model.inputs]
            self.assertEqual(inputs, [{"name": "input", "datatype": "FP32", "shape": [-1, 1024]}])


class Inference(unittest.TestCase):
    def run_every_fixture(self, module, client, binary):
        checked = 0
        for key, fixture in FIXTURES.items():
            model, version = fixture["model"], fixture["version"]
            arrays = fixture_inputs(fixture)
            want = onnxruntime_outputs(model, version, arrays)
            inputs = []
            for name, array in arrays.items():
                tensor = module.InferInput(name, list(array.shape), np_to_triton_dtype(array.dtype))
                if module is httpclient:
                    tensor.set_data_from_numpy(array, binary_data=binary)
                else:
                    tensor.set_data_from_numpy(array)
                inputs.append(tensor)
            outputs = [module.InferRequestedOutput(n, binary_data=binary) if module is httpclient
                       else module.InferRequestedOutput(n) for n in want]
            result = client.infer(model, inputs, model_version=version, outputs=outputs, request_id=key)
            for name, expected in want.items():
                assert_close(self, result.as_numpy(name), expected, f"{key}/{name} binary={binary}")
            checked += 1
        self.assertGreaterEqual(checked, 5)

    def test_http_json(self):
        self.run_every_fixture(httpclient, httpclient.InferenceServerClient(HTTP), binary=False)

    def test_http_binary(self):
        self.run_every_fixture(httpclient, httpclient.InferenceServerClient(HTTP), binary=True)

    def test_grpc(self):
        self.run_every_fixture(grpcclient, grpcclient.InferenceServerClient(GRPC), binary=True)

    def test_grpc_stream(self):
        client = grpcclient.InferenceServerClient(GRPC)
        answers = []
        client.start_stream(callback=lambda result, error: answers.append((result, error)))
        row = fixture_inputs(FIXTURES["breast_cancer/1"])["input"][:1]
        for i in range(10):
            tensor = grpcclient.InferInput("input", list(row.shape), "FP32")
            tensor.set_data_from_numpy(row)
            client.async_stream_infer("breast_cancer", [tensor], request_id=f"s{i}", model_version="1")
        client.stop_stream()  # waits for the answers in flight
        self.assertEqual(len(answers), 10)
        for result, error in answers:
            self.assertIsNone(error)
            self.assertEqual(result.as_numpy("label").shape, (1,))


class Errors(unittest.TestCase):
    def test_unknown_model_and_bad_shape_are_the_clients_own_exceptions(self):
        row = np.zeros((1, 29), dtype=np.float32)
        for module, client in ((httpclient, httpclient.InferenceServerClient(HTTP)),
                               (grpcclient, grpcclient.InferenceServerClient(GRPC))):
            tensor = module.InferInput("input", [1, 29], "FP32")
            tensor.set_data_from_numpy(row)
            with self.assertRaises(InferenceServerException) as caught:
                client.infer("no_such_model", [tensor])
            self.assertIn("model 'no_such_model' is not served", caught.exception.message())
            with self.assertRaises(InferenceServerException) as caught:
                client.infer("breast_cancer", [tensor])
            self.assertIn("has shape [1, 29] but the model expects [-1, 30]", caught.exception.message())


class Repository(unittest.TestCase):
    def test_index_unload_and_load_over_both_protocols(self):
        for client in (httpclient.InferenceServerClient(HTTP), grpcclient.InferenceServerClient(GRPC)):
            index = client.get_model_repository_index()
            rows = index if isinstance(index, list) else [
                {"name": m.name, "version": m.version, "state": m.state} for m in index.models]
            self.assertIn({"name": "digits", "version": "1", "state": "READY"},
                          [{k: r[k] for k in ("name", "version", "state")} for r in rows])
            client.unload_model("digits")
            self.assertFalse(client.is_model_ready("digits"))
            client.load_model("digits")
            self.assertTrue(client.is_model_ready("digits"))
            with self.assertRaises(InferenceServerException) as caught:
                client.load_model("no_such_model")
            self.assertIn("no_such_model", caught.exception.message())


if __name__ == "__main__":
    unittest.main(verbosity=2)
