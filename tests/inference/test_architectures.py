from __future__ import annotations

import logging
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from inference import architectures
from inference.architectures import registry
from inference.datatypes import Datatype
from inference.errors import ArchitectureError


def test_builtins_are_listed_with_schemas() -> None:
    schemas = architectures.available()
    assert {"mlp", "cnn"} <= schemas.keys()
    assert schemas["mlp"]["properties"]["activation"]["enum"] == ["relu", "gelu", "tanh", "sigmoid", "silu"]
    schemas["mlp"]["properties"].clear()  # a copy: callers cannot corrupt the registry
    assert architectures.available()["mlp"]["properties"]


def test_mlp_defaults_and_shapes() -> None:
    config = architectures.validate_config("mlp", {"in_features": 3, "out_features": 2})
    assert config == {
        "in_features": 3,
        "out_features": 2,
        "hidden": [],
        "activation": "relu",
        "dropout": 0.0,
        "dtype": "float32",
    }
    module = architectures.build("mlp", {"in_features": 3, "hidden": [5, 4], "out_features": 2, "dropout": 0.1})
    assert module(torch.zeros(7, 3)).shape == (7, 2)
    sig = architectures.default_signature("mlp", config)
    assert sig is not None and sig.to_dict() == {
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 3]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, 2]}],
    }


def test_dropout_does_not_change_state_dict_keys() -> None:
    base = {"in_features": 3, "hidden": [4], "out_features": 2}
    a = architectures.build("mlp", base).state_dict().keys()
    b = architectures.build("mlp", {**base, "dropout": 0.5}).state_dict().keys()
    assert a == b


def test_cnn_accepts_any_image_size_unless_fixed() -> None:
    module = architectures.build("cnn", {"in_channels": 3, "channels": [4, 8], "out_features": 5})
    assert module(torch.zeros(2, 3, 1, 1)).shape == (2, 5)
    assert module(torch.zeros(2, 3, 17, 9)).shape == (2, 5)
    variable = architectures.default_signature("cnn", {"in_channels": 3, "out_features": 5})
    assert variable is not None and variable.inputs[0].shape == (-1, 3, -1, -1)
    fixed = architectures.default_signature(
        "cnn", {"in_channels": 1, "height": 28, "width": 28, "out_features": 10, "dtype": "float64"}
    )
    assert fixed is not None
    assert fixed.inputs[0].shape == (-1, 1, 28, 28) and fixed.inputs[0].datatype is Datatype.FP64


@pytest.mark.parametrize(
    ("config", "field", "message"),
    [
        ({"out_features": 2}, "in_features", "is required"),
        ({"in_features": 0, "out_features": 2}, "in_features", ">= 1"),
        ({"in_features": 2.0, "out_features": 2}, "in_features", "must be integer"),
        ({"in_features": True, "out_features": 2}, "in_features", "must be integer"),
        ({"in_features": 2, "out_features": 2, "hidden": [4, -1]}, "hidden[1]", ">= 1"),
        ({"in_features": 2, "out_features": 2, "hidden": 4}, "hidden", "must be array"),
        ({"in_features": 2, "out_features": 2, "activation": "swish"}, "activation", "one of"),
        ({"in_features": 2, "out_features": 2, "dropout": 1.0}, "dropout", "< 1"),
        ({"in_features": 2, "out_features": 2, "dropout": -0.1}, "dropout", ">= 0"),
        ({"in_features": 2, "out_features": 2, "layers": 3}, "layers", "not a known field"),
    ],
)
def test_bad_configs_name_the_field(config: dict, field: str, message: str) -> None:
    with pytest.raises(ArchitectureError, match=message) as err:
        architectures.validate_config("mlp", config)
    assert err.value.details["field"] == field
    assert field in err.value.message


def test_unknown_architecture_lists_the_known_ones() -> None:
    with pytest.raises(ArchitectureError, match=r"unknown architecture 'resnet'.*cnn, mlp"):
        architectures.build("resnet", {})


PLUGIN_MODULE = """
import torch
from torch import nn

class Linear:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1}},
        "required": ["n"],
        "additionalProperties": False,
    }

    @staticmethod
    def build(config):
        return nn.Linear(config["n"], 1)

def identity(config):
    return nn.Identity()

def not_a_module(config):
    return 42
"""


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    (tmp_path / "tw_test_plugin.py").write_text(PLUGIN_MODULE)
    dist = tmp_path / "tw_test_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: tw-test-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        textwrap.dedent(
            """
            [torchwire.architectures]
            linear = tw_test_plugin:Linear
            identity = tw_test_plugin:identity
            bogus = tw_test_plugin:not_a_module
            broken = tw_missing_module:thing
            mlp = tw_test_plugin:identity
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(registry, "_registry", dict(registry._BUILTINS))
    monkeypatch.setattr(registry, "_plugins_loaded", False)
    yield


@pytest.mark.usefixtures("plugins")
def test_entry_point_plugins_load_lazily_and_broken_ones_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="inference.architectures.registry"):
        names = architectures.available()
    assert {"linear", "identity", "bogus", "mlp", "cnn"} <= names.keys()
    assert "broken" not in names
    assert any("broken" in r.getMessage() and "failed to load" in r.getMessage() for r in caplog.records)
    assert any("shadows a built-in" in r.getMessage() for r in caplog.records)
    # The built-in mlp wins over the plugin of the same name.
    assert isinstance(architectures.build("mlp", {"in_features": 2, "out_features": 1}), registry.mlp.MLP)

    assert architectures.build("linear", {"n": 3}).in_features == 3
    with pytest.raises(ArchitectureError, match=r"config\.n"):
        architectures.build("linear", {"n": 0})
    assert isinstance(architectures.build("identity", {"anything": 1}), torch.nn.Identity)
    with pytest.raises(ArchitectureError, match=r"not a torch\.nn\.Module"):
        architectures.build("bogus", {})
