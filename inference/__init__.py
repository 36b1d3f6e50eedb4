"""Torchwire's model runtime: a library with no Django dependency.

Modules, each with its public API in its docstring:

- `inference.architectures`: registry of model architectures (`build`, `available`, ...).
- `inference.formats`: artifact formats, validation and safe loading.
- `inference.datatypes`, `inference.signature`: V2 datatypes, model signatures, input validation.
- `inference.runner`: one loaded module on its device, forward passes on a dedicated thread.
- `inference.batcher`: dynamic batching of concurrent requests for one model version; its queue in
  `inference.batch_queue`, its dispatch decisions (cost model, arrivals, p99 tuner) in `inference.dispatch`,
  its configuration and observer types in `inference.batch_types` (all re-exported by `inference.batcher`).
- `inference.pool`: loaded model versions, on-demand loading, memory budget, hot swap.
- `inference.v2`: Open Inference Protocol (KServe V2 / Triton) request and response codec.
- `inference.errors`: every exception raised on purpose, each with its protocol-neutral `kind`.

Serving one V2 request, as an HTTP view would (on the event loop)::

    request = v2.decode_infer_request(body, header_length)            # V2Error (INVALID)
    timeout = request.timeout_seconds
    deadline = None if timeout is None else time.monotonic() + timeout
    async with pool.hold(model, version_or_alias) as served:            # ModelNotFound (NOT_FOUND)
        names, binary = request.output_selection(served.signature.output_names)  # before compute
        outputs = await served.infer(request.inputs, deadline=deadline)   # InputError (INVALID), ...
    body, header_length = v2.encode_infer_response(
        model, served.version, request.id, {n: outputs[n] for n in names}, binary)
    # header_length, if not None, goes in the Inference-Header-Content-Length response header

Any `errors.InferenceError` has a `kind` (`errors.ErrorKind`) that the caller's protocol maps to its
own answer (an HTTP status, say), and ``exc.to_dict()`` for the body; `errors.QueueFull` also carries
``retry_after_seconds`` for a Retry-After header.
"""
