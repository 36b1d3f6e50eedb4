"""LitServe's side of bench/peers: one peer_mlp directory served at ``POST /predict``.

    bench/.venvs/litserve/bin/python bench/peers/litserve_app.py MODEL_DIR --port P \
        --max-batch-size 64 --batch-timeout 0.005

Body ``{"inputs": [[...one row...]]}`` as Torchwire's REST predict takes it; answer ``{"outputs": [[...]]}``.
LitServe batches concurrent requests (``max_batch_size``, ``batch_timeout`` in seconds) before `predict`.
"""

# No `from __future__ import annotations`: LitServe reads `decode_request`'s annotation at run time to build
# its endpoint, and a string there makes FastAPI expect a query parameter.
import argparse
import inspect
import sys
from pathlib import Path
from typing import Any

import litserve as ls
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import peer_mlp


class MLPAPI(ls.LitAPI):
    def __init__(self, directory: str, **batching: Any) -> None:
        super().__init__(**batching)
        self.directory = directory

    def setup(self, device: str) -> None:
        self.module = peer_mlp.load(self.directory)

    def decode_request(self, request: dict[str, Any]) -> torch.Tensor:
        return torch.tensor(request["inputs"][0], dtype=torch.float32)

    def batch(self, inputs: list[torch.Tensor]) -> torch.Tensor:
        return torch.stack(inputs)

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            return self.module(x)

    def unbatch(self, output: torch.Tensor) -> list[torch.Tensor]:
        return list(output)

    def encode_response(self, output: torch.Tensor) -> dict[str, Any]:
        return {"outputs": [output.tolist()]}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dir")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--max-batch-size", type=int, default=64)
    parser.add_argument("--batch-timeout", type=float, default=0.005)
    args = parser.parse_args()
    batching = {"max_batch_size": args.max_batch_size, "batch_timeout": args.batch_timeout}
    # Newer LitServe takes the batching limits on the API, older on the server.
    on_api = "max_batch_size" in inspect.signature(ls.LitAPI.__init__).parameters
    api = MLPAPI(args.model_dir, **(batching if on_api else {}))
    server = ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=60, **({} if on_api else batching))
    server.run(host="127.0.0.1", port=args.port, num_api_servers=1, generate_client_file=False)


if __name__ == "__main__":
    main()
