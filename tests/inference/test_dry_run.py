"""inference.runner.dry_run: the warm-up a serving process runs, done once when a version is published."""

from __future__ import annotations

from pathlib import Path

import pytest
import safetensors.torch

from inference import architectures
from inference.errors import ArtifactError, SignatureError
from inference.runner import dry_run
from inference.signature import Signature

MLP = {"in_features": 4, "hidden": [8], "out_features": 3}


def spec(shape: list[int], datatype: str = "FP32", name: str = "x") -> dict:
    return {"name": name, "datatype": datatype, "shape": shape}


def sig(inputs: list[dict], outputs: list[dict]) -> Signature:
    return Signature.from_dict({"inputs": inputs, "outputs": outputs})


@pytest.fixture
def mlp_file(tmp_path: Path) -> Path:
    path = tmp_path / "mlp.safetensors"
    safetensors.torch.save_file(architectures.build("mlp", MLP).state_dict(), str(path))
    return path


def run(path: Path, signature: Signature, max_elements: int = 1_000_000) -> None:
    dry_run(path, "safetensors", "mlp", architectures.validate_config("mlp", MLP), signature,
            max_elements=max_elements)


def test_the_default_signature_runs(mlp_file):
    run(mlp_file, architectures.default_signature("mlp", MLP))
    run(mlp_file, sig([spec([-1, 4], name="features")], [spec([-1, 3], name="scores")]))


@pytest.mark.parametrize(
    ("signature", "needle"),
    [
        (sig([spec([-1, 7])], [spec([-1, 3], name="y")]), "shapes cannot be multiplied"),
        # Serving warms up with 1 for a variable dimension, so this could never load either.
        (sig([spec([-1, -1])], [spec([-1, 3], name="y")]), "shapes cannot be multiplied"),
        (sig([spec([-1, 4])], [spec([-1, 5], name="y")]), "output 'y'"),
        (sig([spec([-1, 4])], [spec([-1, 3, 1], name="y")]), "output 'y'"),
        (sig([spec([-1, 4])], [spec([-1, 3], name="y"), spec([-1, 3], name="z")]), "2"),
        (sig([spec([-1, 4]), spec([-1, 4], name="x2")], [spec([-1, 3], name="y")]), "argument"),
        (sig([spec([-1, 2, 2])], [spec([-1, 3], name="y")]), "shapes cannot be multiplied"),
        (sig([spec([-1, 4], "INT64")], [spec([-1, 3], name="y")]), "dtype"),
    ],
)
def test_a_signature_the_model_cannot_run_is_refused(mlp_file, signature, needle):
    with pytest.raises(SignatureError) as caught:
        run(mlp_file, signature)
    assert needle in caught.value.message, caught.value.message
    assert "\n" not in caught.value.message and ".cpp" not in caught.value.message


def test_huge_rows_are_refused_before_anything_is_allocated(mlp_file):
    with pytest.raises(SignatureError, match="elements"):
        run(mlp_file, sig([spec([-1, 10**6, 10**6])], [spec([-1, 3], name="y")]))
    with pytest.raises(SignatureError, match="more than the 100"):
        run(mlp_file, sig([spec([-1, 101])], [spec([-1, 3], name="y")]), max_elements=100)


def test_a_broken_artifact_is_an_artifact_error(tmp_path):
    path = tmp_path / "short.safetensors"
    safetensors.torch.save_file(architectures.build("mlp", {**MLP, "hidden": [9]}).state_dict(), str(path))
    with pytest.raises(ArtifactError):
        run(path, architectures.default_signature("mlp", MLP))
