"""Every validator of identifiers matches the whole string.

With ``re.match`` and a ``$`` anchor, ``"x\\n"`` passes, since ``$`` also matches before a trailing
newline: a model named ``x\\n`` got into storage keys, and the topic ``model:x\\n`` was authorized as
``model:x``. The property test feeds each validator values it accepts with a control character added
somewhere (end, start or middle); the scan keeps ``$`` and ``.match`` out of the code's regexes.
"""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError as PydanticError

from app import launcher
from app.accounts.models import User
from app.core.errors import ApiError
from app.core.logging import clean_request_id
from app.core.storage import KEY_RE, is_valid_key
from app.datasets.services import dataset_name_clean
from app.jobs.models import JobState
from app.monitoring.selectors import parse_window
from app.registry import services as registry
from app.registry.schemas import ModelPatchIn, PromoteIn
from inference import architectures
from inference.datatypes import parse_datatype
from inference.errors import InferenceError
from realtime import app_topics, bus

ROOT = Path(__file__).resolve().parent.parent
CONTROL = st.sampled_from(["\n", "\r", "\r\n", "\x00", "\t", "\x0b", "\x0c", "\x1b", "\x7f", "\x85", "\u2028"])


def accepts(call: Callable[[str], object], *refusals: type[Exception]) -> Callable[[str], bool]:
    caught: tuple[type[Exception], ...] = refusals or (ValueError, ApiError, InferenceError)

    def check(value: str) -> bool:
        try:
            call(value)
        except caught:
            return False
        return True

    return check


def _window(value: str) -> object:
    return parse_window(value)


# name -> (accepts(value) -> bool, values it accepts)
VALIDATORS: dict[str, tuple[Callable[[str], bool], st.SearchStrategy[str]]] = {
    "model name": (accepts(lambda v: registry.model_name_check(name=v)),
                   st.from_regex(registry.NAME_RE, fullmatch=True)),
    "device (service)": (lambda v: not registry.model_settings_errors(changes={"device": v}),
                         st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "cuda:12"])),
    "device (schema)": (accepts(lambda v: ModelPatchIn(device=v), PydanticError),
                        st.sampled_from(["auto", "cpu", "cuda", "cuda:0", "cuda:12"])),
    "stage (schema)": (accepts(lambda v: PromoteIn(stage=v), PydanticError),  # type: ignore[arg-type]
                       st.sampled_from(["staging", "production", "archived"])),
    "topic": (accepts(bus.parse_topic), st.from_regex(bus.TOPIC_RE, fullmatch=True)),
    "event type": (accepts(bus.check_event_type),
                   st.from_regex(bus.TYPE_RE, fullmatch=True).filter(lambda t: t not in bus.RESERVED_TYPES)),
    "job topic": (accepts(lambda v: app_topics._job_id(f"job:{v}")), st.integers(1, 10**17).map(str)),
    "username": (accepts(User.username_validator, ValidationError),
                 st.from_regex(r"[A-Za-z0-9_.@+-]{1,150}", fullmatch=True)),
    "storage key": (is_valid_key, st.from_regex(KEY_RE, fullmatch=True).filter(is_valid_key)),
    "request id": (lambda v: clean_request_id(v) == v, st.from_regex(r"[A-Za-z0-9._:-]{1,128}", fullmatch=True)),
    "monitoring window": (accepts(_window), st.sampled_from(["1m", "15m", "1h", "24h", "7d", "600s"])),
    "nginx rate": (accepts(launcher._rate_per_second, launcher.LauncherError),
                   st.from_regex(r"[0-9]{1,6}r/[sm]", fullmatch=True)),
    "architecture": (accepts(lambda v: architectures.validate_config(v, {"in_features": 1, "out_features": 1})),
                     st.sampled_from(["mlp", "tabular-mlp"])),
    "datatype": (accepts(parse_datatype), st.sampled_from(["FP32", "FP64", "INT64", "BOOL", "UINT8"])),
    "job state": (accepts(JobState), st.sampled_from(list(JobState))),
}


@st.composite
def spoiled(draw: st.DrawFn, valid: st.SearchStrategy[str]) -> tuple[str, str]:
    value = draw(valid)
    bad = draw(CONTROL)
    at = draw(st.sampled_from(["end", "start", "middle"]))
    if at == "end":
        return value, value + bad
    if at == "start":
        return value, bad + value
    cut = draw(st.integers(0, len(value)))
    return value, value[:cut] + bad + value[cut:]


@pytest.mark.parametrize("name", sorted(VALIDATORS))
@settings(max_examples=60, deadline=None)
@given(data=st.data())
def test_a_control_character_anywhere_is_refused(name, data):
    check, valid = VALIDATORS[name]
    value, bad = data.draw(spoiled(valid))
    assert check(value), f"{name} refuses the valid {value!r}"
    assert not check(bad), f"{name} accepts {bad!r}"


@given(st.text())
def test_dataset_names_keep_no_control_character(name):
    # A display name, not an identifier: cleaned (as Django cleans an upload's file name), not refused.
    cleaned = dataset_name_clean(name)
    assert cleaned and len(cleaned) <= 255 and cleaned.isprintable()


def test_usernames_are_checked_by_the_service(transactional_db):
    from app.accounts.services import user_create

    for bad in ("ada\n", "ada\x00", "a da", ""):
        with pytest.raises(ApiError):
            user_create(username=bad, password="pw-long-enough-1")
    assert not User.objects.exists()


# --- the code's regexes ------------------------------------------------------------------------------

SOURCES = [p for d in ("app", "inference", "realtime", "workers") for p in (ROOT / d).rglob("*.py")
           if "migrations" not in p.parts] + [ROOT / "asgi.py"]
RE_FUNCTIONS = {"compile", "match", "search", "fullmatch", "sub", "subn", "split", "findall", "finditer"}


def _dollar_anchor(pattern: str) -> bool:
    escaped = False
    in_class = False
    for ch in pattern:
        if escaped:
            escaped = False
        elif ch == "\\":
            escaped = True
        elif ch == "[":
            in_class = True
        elif ch == "]":
            in_class = False
        elif ch == "$" and not in_class:
            return True
    return False


def _regex_calls(tree: ast.AST) -> list[tuple[int, str, ast.expr]]:
    """(line, function, pattern argument) of every call to ``re.<function>(pattern, ...)``."""
    found = []
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name) and node.func.value.id == "re"
                and node.func.attr in RE_FUNCTIONS and node.args):
            found.append((node.lineno, node.func.attr, node.args[0]))
    return found


def test_no_regex_in_the_code_uses_a_dollar_anchor_or_re_match():
    problems = []
    for path in SOURCES:
        tree = ast.parse(path.read_text(), str(path))
        compiled = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
                func = node.value.func
                if isinstance(func, ast.Attribute) and func.attr == "compile" and isinstance(func.value, ast.Name) \
                        and func.value.id == "re":
                    compiled |= {t.id for t in node.targets if isinstance(t, ast.Name)}
        where = path.relative_to(ROOT)
        for line, function, pattern in _regex_calls(tree):
            if function == "match":
                problems.append(f"{where}:{line}: re.match (use re.fullmatch)")
            if isinstance(pattern, ast.Constant) and isinstance(pattern.value, str) and _dollar_anchor(pattern.value):
                problems.append(f"{where}:{line}: '$' in {pattern.value!r} (use fullmatch or \\Z)")
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "match"
                    and isinstance(node.func.value, ast.Name) and node.func.value.id in compiled):
                problems.append(f"{where}:{node.lineno}: {node.func.value.id}.match (use fullmatch)")
    assert not problems, "\n".join(problems)


def test_the_scan_sees_what_it_looks_for():
    tree = ast.parse('import re\nA = re.compile(r"^a$")\nA.match("a")\nre.match(r"b$", "b")\n')
    assert [(f, p.value) for _, f, p in _regex_calls(tree)] == [("compile", "^a$"), ("match", "b$")]  # type: ignore[attr-defined]
    assert _dollar_anchor("^a$") and not _dollar_anchor(r"a\$") and not _dollar_anchor("[$]") and \
        not _dollar_anchor(r"a\Z")
