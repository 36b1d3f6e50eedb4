"""Torchwire's model runtime: a library with no Django dependency.

Modules, each with its public API in its docstring:

- `inference.architectures`: registry of model architectures (`build`, `available`, ...).
- `inference.formats`: artifact formats, validation and safe loading.
- `inference.datatypes`, `inference.signature`: V2 datatypes, model signatures, input validation.
- `inference.runner`: one loaded module on its device, forward passes on a dedicated thread.
- `inference.batcher`: dynamic batching of concurrent requests for one model version.
- `inference.pool`: loaded model versions, on-demand loading, memory budget, hot swap.
- `inference.v2`: Open Inference Protocol (KServe V2 / Triton) request and response codec.
- `inference.errors`: every exception raised on purpose, each with its `http_status`.

Serving one V2 request, as an HTTP view would (on the event loop)::

    request = v2.decode_infer_request(body, header_length)            # V2Error -> 400
    timeout = request.timeout_seconds
    deadline = None if timeout is None else time.monotonic() + timeout
    async with pool.hold(model, version_or_alias) as served:            # ModelNotFound -> 404
        names, binary = request.output_selection(served.signature.output_names)  # before compute
        outputs = await served.infer(request.inputs, deadline=deadline)   # InputError -> 400, ...
    body, header_length = v2.encode_infer_response(
        model, served.version, request.id, {n: outputs[n] for n in names}, binary)
    # header_length, if not None, goes in the Inference-Header-Content-Length response header

Any `errors.InferenceError` maps to ``exc.http_status`` with ``exc.to_dict()`` as the body;
`errors.QueueFull` also carries ``retry_after_seconds`` for a Retry-After header.
"""
