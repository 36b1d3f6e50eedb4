"""MLServer's side of bench/peers: a custom runtime serving a peer_mlp directory over V2.

`model-settings.json` (written by bench/peers/round_robin.py) names ``mlserver_runtime.TorchMLP`` as the
implementation and the model directory as ``parameters.uri``; MLServer's adaptive batching
(``max_batch_size``, ``max_batch_time``) merges concurrent requests along the first dimension before
`predict` is called, as Torchwire's batcher does.
"""

from __future__ import annotations

import peer_mlp
import torch
from mlserver import MLModel
from mlserver.codecs import NumpyCodec
from mlserver.types import InferenceRequest, InferenceResponse


class TorchMLP(MLModel):
    async def load(self) -> bool:
        uri = self.settings.parameters.uri if self.settings.parameters else None
        if not uri:
            raise ValueError("parameters.uri must name the model directory")
        self._module = peer_mlp.load(uri)
        return True

    async def predict(self, payload: InferenceRequest) -> InferenceResponse:
        x = NumpyCodec.decode_input(payload.inputs[0])
        with torch.inference_mode():
            y = self._module(torch.from_numpy(x)).numpy()
        return InferenceResponse(model_name=self.name, model_version=self.version,
                                 outputs=[NumpyCodec.encode_output("output", y)])
