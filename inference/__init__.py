"""Torchwire's model runtime: a library with no Django dependency.

Modules, each with its public API in its docstring:

- `inference.architectures`: registry of model architectures (`build`, `available`, ...).
- `inference.formats`: artifact formats, validation and safe loading.
- `inference.datatypes`, `inference.signature`: V2 datatypes, model signatures, input validation.
- `inference.runner`: one loaded module on its device, forward passes on a dedicated thread.
- `inference.batcher`: dynamic batching of concurrent requests for one model version.
- `inference.pool`: loaded model versions, on-demand loading, memory budget, hot swap.
- `inference.v2`: Open Inference Protocol (KServe V2 / Triton) request and response codec.
- `inference.errors`: every exception raised on purpose, each with its HTTP status.
"""
