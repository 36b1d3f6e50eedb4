from __future__ import annotations

import functools
import hashlib
import os
import pickle
from pathlib import Path

import pytest
import safetensors.torch
import torch

from inference import architectures
from inference.errors import ArtifactError, ArtifactForbidden
from inference.formats import FORMATS, load_module, sha256_file, sniff, validate_artifact

CONFIG = {"in_features": 4, "hidden": [8], "out_features": 3}


def save_mlp(path: Path, config: dict = CONFIG) -> torch.nn.Module:
    torch.manual_seed(0)
    module = architectures.build("mlp", config).eval()
    safetensors.torch.save_file(module.state_dict(), path)
    return module


def test_safetensors_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    original = save_mlp(path)
    info = validate_artifact(path, "safetensors", architecture="mlp", config=CONFIG, allow_code=False)
    assert info.tensors is not None and info.tensors["layers.0.weight"].shape == (8, 4)
    loaded = load_module(path, "safetensors", "mlp", CONFIG, "cpu")
    assert not loaded.training
    assert not any(p.requires_grad for p in loaded.parameters())
    x = torch.randn(5, 4)
    torch.testing.assert_close(loaded(x), original(x), rtol=0, atol=0)


def test_sha256(tmp_path: Path) -> None:
    path = tmp_path / "blob"
    path.write_bytes(b"x" * 3_000_000)
    assert sha256_file(path) == hashlib.sha256(b"x" * 3_000_000).hexdigest()


def _expect_mismatch(tmp_path: Path, state: dict[str, torch.Tensor]) -> ArtifactError:
    path = tmp_path / "bad.safetensors"
    safetensors.torch.save_file(state, path)
    with pytest.raises(ArtifactError) as err:
        validate_artifact(path, "safetensors", architecture="mlp", config=CONFIG, allow_code=False)
    with pytest.raises(ArtifactError):
        load_module(path, "safetensors", "mlp", CONFIG, "cpu")
    return err.value


def test_missing_tensor_is_named(tmp_path: Path) -> None:
    state = architectures.build("mlp", CONFIG).state_dict()
    del state["layers.1.bias"]
    err = _expect_mismatch(tmp_path, state)
    assert err.details["missing"] == ["layers.1.bias"]
    assert "missing tensor 'layers.1.bias'" in err.message


def test_unexpected_tensor_is_named(tmp_path: Path) -> None:
    state = {**architectures.build("mlp", CONFIG).state_dict(), "extra.weight": torch.zeros(2)}
    err = _expect_mismatch(tmp_path, state)
    assert err.details["unexpected"] == ["extra.weight"] and err.details["missing"] == []
    assert "unexpected tensor 'extra.weight'" in err.message


def test_shape_mismatch_is_named(tmp_path: Path) -> None:
    state = architectures.build("mlp", {**CONFIG, "hidden": [9]}).state_dict()
    err = _expect_mismatch(tmp_path, state)
    assert {"key": "layers.0.weight", "expected": [8, 4], "actual": [9, 4]} in err.details["shape_mismatch"]


def test_dtype_mismatch_is_named(tmp_path: Path) -> None:
    state = {k: v.double() for k, v in architectures.build("mlp", CONFIG).state_dict().items()}
    err = _expect_mismatch(tmp_path, state)
    assert {"key": "layers.0.bias", "expected": "F32", "actual": "F64"} in err.details["dtype_mismatch"]
    assert "dtype F64, expected F32" in err.message


def test_truncated_safetensors_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_mlp(path)
    path.write_bytes(path.read_bytes()[:-10])
    with pytest.raises(ArtifactError, match="invalid safetensors"):
        validate_artifact(path, "safetensors", architecture="mlp", config=CONFIG, allow_code=False)


def test_safetensors_needs_an_architecture(tmp_path: Path) -> None:
    path = tmp_path / "m.safetensors"
    save_mlp(path)
    with pytest.raises(ArtifactError, match="needs an architecture"):
        validate_artifact(path, "safetensors", allow_code=False)


@pytest.fixture(scope="module")
def code_artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("code")
    torch.manual_seed(0)
    module = architectures.build("mlp", CONFIG).eval()
    example = torch.randn(2, 4)
    script = root / "m.ts"
    torch.jit.trace(module, example).save(str(script))
    exported = root / "m.pt2"
    program = torch.export.export(module, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))
    torch.export.save(program, str(exported))
    return {"torchscript": script, "torch_export": exported, "reference": root}


@pytest.mark.parametrize("fmt", ["torchscript", "torch_export"])
def test_code_formats_are_forbidden_unless_allowed(fmt: str, code_artifacts: dict[str, Path]) -> None:
    with pytest.raises(ArtifactForbidden) as err:
        validate_artifact(code_artifacts[fmt], fmt, allow_code=False)
    assert "TORCHWIRE_ALLOW_CODE_ARTIFACTS" in err.value.reason
    assert err.value.kind == "forbidden"
    with pytest.raises(ArtifactForbidden):
        load_module(code_artifacts[fmt], fmt, None, None, "cpu")


@pytest.mark.parametrize("fmt", ["torchscript", "torch_export"])
def test_code_formats_load_when_allowed(fmt: str, code_artifacts: dict[str, Path]) -> None:
    assert sniff(code_artifacts[fmt]) == fmt
    assert validate_artifact(code_artifacts[fmt], fmt, allow_code=True).tensors is None
    module = load_module(code_artifacts[fmt], fmt, None, None, "cpu", allow_code=True)
    torch.manual_seed(0)
    reference = architectures.build("mlp", CONFIG).eval()
    x = torch.randn(7, 4)
    torch.testing.assert_close(module(x), reference(x))


def test_format_must_match_the_file(tmp_path: Path, code_artifacts: dict[str, Path]) -> None:
    path = tmp_path / "m.safetensors"
    save_mlp(path)
    with pytest.raises(ArtifactError, match="not a valid torchscript artifact"):
        validate_artifact(path, "torchscript", allow_code=True)
    with pytest.raises(ArtifactError, match="not a valid torch_export artifact"):
        validate_artifact(code_artifacts["torchscript"], "torch_export", allow_code=True)
    with pytest.raises(ArtifactError, match="not a valid safetensors artifact"):
        validate_artifact(
            code_artifacts["torchscript"], "safetensors", architecture="mlp", config=CONFIG, allow_code=True
        )


@pytest.mark.parametrize("fmt", ["pickle", "pt", "onnx", ""])
def test_unknown_format_names_are_refused(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "m.safetensors"
    save_mlp(path)
    with pytest.raises(ArtifactError, match="unsupported artifact format"):
        validate_artifact(path, fmt, architecture="mlp", config=CONFIG, allow_code=True)


class Canary:
    """Unpickling this creates a directory: proof that the pickle was executed."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple:
        return (os.mkdir, (str(self.path),))


def _malicious_files(root: Path, canary: Path) -> dict[str, Path]:
    files = {}
    for protocol in range(0, pickle.HIGHEST_PROTOCOL + 1):
        path = root / f"proto{protocol}.pkl"
        path.write_bytes(pickle.dumps(Canary(canary), protocol=protocol))
        files[f"pickle-{protocol}"] = path
    torch.save({"weights": Canary(canary)}, root / "zip.pt")
    files["torch.save"] = root / "zip.pt"
    torch.save({"weights": Canary(canary)}, root / "legacy.pt", _use_new_zipfile_serialization=False)
    files["torch.save-legacy"] = root / "legacy.pt"
    # A checkpoint whose state dict looks right, to be sure only the bytes decide.
    state = {k: v for k, v in architectures.build("mlp", CONFIG).state_dict().items()}
    state["evil"] = Canary(canary)  # type: ignore[assignment]
    torch.save(state, root / "state.safetensors")
    files["torch.save-named-safetensors"] = root / "state.safetensors"
    return files


def test_the_canary_pickle_really_executes(tmp_path: Path) -> None:
    canary = tmp_path / "canary"
    pickle.loads(pickle.dumps(Canary(canary)))
    assert canary.exists()


@pytest.mark.parametrize("allow_code", [False, True])
@pytest.mark.parametrize("fmt", [*FORMATS, "pickle", "pt"])
def test_pickles_are_refused_in_every_format_before_deserialization(tmp_path: Path, fmt: str, allow_code: bool) -> None:
    canary = tmp_path / "canary"
    for label, path in _malicious_files(tmp_path, canary).items():
        for attempt in (
            functools.partial(validate_artifact, path, fmt, architecture="mlp", config=CONFIG, allow_code=allow_code),
            functools.partial(load_module, path, fmt, "mlp", CONFIG, "cpu", allow_code=allow_code),
        ):
            with pytest.raises(ArtifactError) as err:
                attempt()
            if fmt in FORMATS and label.startswith(("pickle-2", "pickle-5", "torch.save")):
                assert "pickle" in err.value.message, (label, err.value.message)
        assert not canary.exists(), f"{label} as {fmt} was unpickled"


def test_safetensors_whose_header_length_looks_like_a_pickle_opcode(tmp_path):
    """A 0x280-byte header makes the file start with 80 02, the pickle protocol-2 opcode."""
    import json
    import struct

    from inference.formats import sniff

    header = {"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}
    raw = json.dumps(header).encode()
    raw += b" " * (0x280 - len(raw))
    path = tmp_path / "model.safetensors"
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"\0\0\0\0")
    assert path.read_bytes()[:2] == b"\x80\x02"
    assert sniff(path) == "safetensors"
