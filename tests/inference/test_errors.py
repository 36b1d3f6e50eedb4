"""inference/errors.py: what an error tells the caller about the server."""

from __future__ import annotations

import re
import warnings

import pytest
import torch

from inference.errors import BatchFailed, InferenceError, InputError, ModelLoadError, public_message

# Anything that looks like a path on the server or in torch's build tree.
LEAK = re.compile(r"/(__w|pytorch|tmp|home|root|work|usr|opt|var)/|\.(cpp|cu|h|py)\b|Exception raised from")


def _torch_warning_text() -> str:
    """A real message of torch's C++ side that names its source file (a warning raised as an error, as a
    server running with warnings as errors would see it)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            torch.frombuffer(b"\x00\x00\x80?", dtype=torch.float32)
        except UserWarning as exc:
            return str(exc)
    pytest.skip("this torch build no longer warns about non-writable buffers")


@pytest.mark.parametrize("text", [
    'INTERNAL ASSERT FAILED at "/pytorch/aten/src/ATen/native/TensorShape.cpp":1234, please report a bug',
    "bad shape\nException raised from check_shape at /pytorch/c10/core/TensorImpl.cpp:88 (most recent call first):\n"
    "frame #0: c10::Error::Error(c10::SourceLocation, std::string) + 0x96 (0x7f in /usr/lib/libc10.so)",
    "The provided filename /tmp/tw-artifact-1a2b3c does not exist",
    'File "/work/app/.venv/lib/python3.11/site-packages/torch/nn/modules/conv.py", line 549, in forward',
])
def test_source_paths_and_backtraces_never_reach_the_message(text: str) -> None:
    for error in (InferenceError(text), BatchFailed(f"forward pass failed: RuntimeError: {text}"),
                  ModelLoadError(f"could not load m/1: {text}"), InputError("input", text)):
        assert not LEAK.search(error.message), error.message
        assert not LEAK.search(str(error)), str(error)
        assert error.message.strip()


def test_a_real_torch_message_loses_its_source_location() -> None:
    text = _torch_warning_text()
    assert LEAK.search(text), text  # the premise: torch names its C++ source file
    message = InferenceError(f"forward pass failed: {text}").message
    assert not LEAK.search(message), message
    assert "not writable" in message


def test_messages_without_internals_are_unchanged() -> None:
    for text in ("mat1 and mat2 shapes cannot be multiplied (2x3 and 4x5)",
                 "input 'input': dimension 1 must be 3 [N, 3, *, *], got shape [1, 1, 1, 1]",
                 "model 'churn' has no version 7; see GET /api/v1/models/churn/versions",
                 "[enforce fail at alloc_cpu.cpp:127] DefaultCPUAllocator: can't allocate memory"):
        assert public_message(text) == text
