"""The MLServer peer's model: a custom MLServer runtime serving models/breast_cancer/2/model.onnx with onnxruntime
(MLServer ships no ONNX runtime of its own). Run by benches/peers.sh with `mlserver start benches/peers/mlserver` in a
throwaway venv; never a dependency of Vane. One onnxruntime session per MLServer inference worker, loaded at start;
every request arrives as MLServer's parsed V2 InferenceRequest, runs at batch 1 and leaves as its InferenceResponse.
"""

import numpy as np
import onnxruntime as ort
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.codecs.numpy import to_datatype
from mlserver.types import InferenceRequest, InferenceResponse, ResponseOutput
from mlserver.utils import get_model_uri


class OnnxModel(MLModel):
    async def load(self) -> bool:
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(
            await get_model_uri(self._settings), options, providers=["CPUExecutionProvider"]
        )
        self._input_name = self._session.get_inputs()[0].name
        self._output_names = [output.name for output in self._session.get_outputs()]
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0]).astype(np.float32, copy=False)
        outputs = self._session.run(None, {self._input_name: x})
        answer = []
        for name, value in zip(self._output_names, outputs):
            value = np.asarray(value)
            # The model's own shapes (label [1], probabilities [1,2]); NumpyCodec.encode_output would pad [1] to [1,1].
            answer.append(ResponseOutput(name=name, datatype=to_datatype(value.dtype), shape=list(value.shape),
                                         data=value.ravel().tolist()))
        return InferenceResponse(model_name=self.name, model_version=self.version, outputs=answer)
