"""The peer most users would write instead of Vane: FastAPI + onnxruntime serving models/breast_cancer/2/model.onnx (the
version Vane serves, the newest) with the same V2 JSON request and answer Vane speaks (run by benches/peers.sh in a
throwaway venv; never a dependency of Vane). One onnxruntime session per worker process, loaded at start; every
request is parsed by FastAPI, run at batch 1, and answered as JSON.

Usage: uvicorn fastapi_server:app --workers 2 --port PORT   (with MODEL pointing at the .onnx file)
"""

import os

import numpy as np
import onnxruntime as ort
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

MODEL = os.environ.get("MODEL", "models/breast_cancer/2/model.onnx")
options = ort.SessionOptions()
options.intra_op_num_threads = 1
session = ort.InferenceSession(MODEL, options, providers=["CPUExecutionProvider"])
input_name = session.get_inputs()[0].name
app = FastAPI()


@app.post("/v2/models/breast_cancer/infer")
async def infer(request: Request) -> JSONResponse:
    body = await request.json()
    tensor = body["inputs"][0]
    x = np.asarray(tensor["data"], dtype=np.float32).reshape(tensor["shape"])
    outputs = session.run(None, {input_name: x})
    answer = []
    for meta, value in zip(session.get_outputs(), outputs):
        value = np.asarray(value)
        datatype = "INT64" if value.dtype == np.int64 else "FP32"
        answer.append({"name": meta.name, "datatype": datatype, "shape": list(value.shape),
                       "data": value.ravel().tolist()})
    return JSONResponse({"model_name": "breast_cancer", "outputs": answer})
