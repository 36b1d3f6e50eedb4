"""app/serving/calls.py: the version parser, and where a request's conversion runs."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter, ValidationError

from app.serving import calls, records, runtime
from app.serving.catalog import ModelInfo
from inference.errors import RequestTooLarge
from inference.signature import Signature
from tabular.features import FeaturePipeline

# --- versions -----------------------------------------------------------------------------------


def _is_version_text(text: str) -> bool:
    return 0 < len(text) <= 10 and all("0" <= ch <= "9" for ch in text) and 1 <= int(text) <= calls.MAX_VERSION


@settings(max_examples=500, deadline=None)
@given(text=st.text(max_size=12) | st.from_regex(r"\A[0-9]{1,12}\Z") | st.sampled_from(
    ["\u00b2", "\u0661", "\uff11", "1" * 5001, "0", "007", "2147483647", "2147483648", " 1", "+1", "1_0", "1.0"]))
def test_a_version_string_is_ascii_digits_within_range(text):
    if _is_version_text(text):
        assert calls.version_number(text) == int(text)
    else:
        with pytest.raises(ValueError, match="model version must be an integer from 1 to 2147483647"):
            calls.version_number(text)


@settings(max_examples=200, deadline=None)
@given(value=st.integers() | st.booleans() | st.floats() | st.none() | st.lists(st.integers(), max_size=2))
def test_a_version_value_is_an_integer_within_range(value):
    if type(value) is int and 1 <= value <= calls.MAX_VERSION:
        assert calls.version_number(value) == value
    else:
        with pytest.raises(ValueError):
            calls.version_number(value)


def test_the_query_type_validates_with_the_same_parser():
    adapter: TypeAdapter[int] = TypeAdapter(calls.VersionQuery)
    assert adapter.validate_python("12") == 12
    for bad in ("\u0661", "1" * 5001, "0", " 1"):
        with pytest.raises(ValidationError, match="model version must be an integer"):
            adapter.validate_python(bad)
    assert adapter.json_schema() == {"type": "integer", "minimum": 1, "maximum": calls.MAX_VERSION}


def test_v2_version_is_a_v2_error_that_quotes_a_short_part():
    from inference.errors import V2Error

    assert calls.v2_version("3") == 3 and calls.v2_version(None) is None
    with pytest.raises(V2Error) as err:
        calls.v2_version("9" * 5001)
    assert err.value.kind == "invalid" and len(err.value.message) < 200


# --- where conversion runs ----------------------------------------------------------------------

PIPELINE = FeaturePipeline.fit({"age": [20.0, 30.0, 40.0], "city": ["Oslo", "Rome", "Oslo"]},
                               {"age": "numeric", "city": "categorical"})


def _target(max_queue: int = 100_000) -> runtime.Target:
    info = ModelInfo(id=1, name="m", owner_id=1, visibility="public", shared_with=frozenset(), production=1,
                     max_batch_size=32, max_delay_ms=0, max_queue=max_queue, timeout_ms=1000, device="cpu",
                     dispatch_policy="", target_p99_ms=None)
    signature = Signature.from_dict({
        "inputs": [{"name": "features", "datatype": "FP32", "shape": [-1, PIPELINE.n_features]}],
        "outputs": [{"name": "logits", "datatype": "FP32", "shape": [-1, 2]}]})
    return runtime.Target(model=info, version=1, label="1", signature=signature,
                          extras={"pipeline": PIPELINE.to_dict(), "labels": ["no", "yes"], "task": "classification"})


class _Observation:
    prediction_id = "p"

    def records(self, *args: Any) -> None: ...

    def tensors(self, *args: Any) -> None: ...


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list[int]]]:
    """calls.predict against a stand-in runtime (the model and its pool are not what is tested here);
    yields the threads the conversions ran on."""
    threads: dict[str, list[int]] = {"records": [], "tensors": []}
    target = _target()

    async def resolve(user: object, name: str, version: int | None) -> runtime.Target:
        return target

    async def infer(target: runtime.Target, inputs: dict[str, np.ndarray], **kwargs: Any) -> tuple[int, dict]:
        rows = next(iter(inputs.values())).shape[0]
        return 1, {"logits": np.zeros((rows, 2), dtype=np.float32)}

    def spy(kind: str, fn: Any) -> Any:
        def wrapped(*args: Any) -> Any:
            threads[kind].append(threading.get_ident())
            return fn(*args)
        return wrapped

    monkeypatch.setattr(runtime, "resolve", resolve)
    monkeypatch.setattr(runtime, "infer", infer)
    monkeypatch.setattr(calls.recording, "observe", lambda *a, **k: contextlib.nullcontext(_Observation()))
    monkeypatch.setattr(records, "records_to_inputs", spy("records", records.records_to_inputs))
    monkeypatch.setattr(calls, "inputs_from_json", spy("tensors", calls.inputs_from_json))
    yield threads


@pytest.mark.parametrize(("size", "records_off", "tensors_off"), [
    (100, False, False), (calls.RECORDS_OFFLOAD_BYTES + 1, True, False), (calls.OFFLOAD_BYTES + 1, True, True)])
async def test_a_large_request_is_converted_off_the_event_loop(served, size, records_off, tensors_off):
    loop_thread = threading.get_ident()
    rows = [{"age": 25, "city": "Oslo"}, {"age": None, "city": "Paris"}]
    answer = await calls.predict(None, "m", None, rows, timeout_ms=None, size=size)  # type: ignore[arg-type]
    assert [o["label"] for o in answer["outputs"]] == ["no", "no"]
    tensors = await calls.predict(None, "m", None, [[0.0] * PIPELINE.n_features], timeout_ms=None,  # type: ignore[arg-type]
                                  size=size)
    assert tensors["outputs"] == [[0.0, 0.0]]
    assert len(served["records"]) == len(served["tensors"]) == 1
    assert (served["records"][0] != loop_thread) is records_off
    assert (served["tensors"][0] != loop_thread) is tensors_off


async def test_rows_past_the_limit_are_refused_before_any_conversion(served, monkeypatch):
    monkeypatch.setattr(runtime, "resolve", _resolve_to(_target(max_queue=3)))
    for inputs in ([{"age": "bad", "city": 1}] * 4, [[0.0]] * 4, {"features": [[0.0]] * 4}):
        with pytest.raises(RequestTooLarge) as err:
            await calls.predict(None, "m", None, inputs, timeout_ms=None)  # type: ignore[arg-type]
        assert err.value.details == {"rows": 4, "max_rows": 3}
    assert served == {"records": [], "tensors": []}


def _resolve_to(target: runtime.Target) -> Any:
    async def resolve(user: object, name: str, version: int | None) -> runtime.Target:
        return target
    return resolve
