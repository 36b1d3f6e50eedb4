"""Run state of a training run: per-epoch reports, checkpoints to resume from, and the seeded RNGs."""

from __future__ import annotations

import io
import random
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import torch

from tabular.errors import CheckpointError

__all__ = ["CHECKPOINT_FORMAT", "Checkpoint", "EpochReport", "copy_state", "restore_rngs", "rng_states", "seeded_rngs"]

CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class EpochReport:
    """Sent after every epoch. `eta_s` assumes all `epochs` run; early stopping may end sooner.

    `metric` is validation accuracy (classification) or RMSE on the target's scale (regression).
    Losses are cross-entropy, or the mean squared error of the standardised target.
    """

    epoch: int
    epochs: int
    train_loss: float
    val_loss: float
    metric_name: str
    metric: float
    elapsed_s: float
    eta_s: float
    best_epoch: int
    trial: int | None = None  # set by `tabular.tuning`: which trial of a search this epoch belongs to

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        if self.trial is None:
            del out["trial"]
        return out


@dataclass(frozen=True)
class Checkpoint:
    """A run after `epoch` epochs: everything ``train_tabular(..., resume=...)`` needs to go on exactly as
    if it had never stopped.

    The model and optimiser state; the RNG states (torch's global one, which drives dropout, the
    shuffling generator, numpy's and Python's global ones); early stopping (best validation loss, its
    epoch and weights; the patience count is ``epoch - best_epoch``); the metric `history`; and `report`,
    the epoch's `EpochReport`, for a caller that has to send it again. `fingerprint` names the data and
    options the run was started with. The tensors are copies, so the run may go on meanwhile.
    """

    epoch: int
    fingerprint: str
    model: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    best_loss: float
    best_epoch: int
    best_state: dict[str, torch.Tensor]
    history: list[dict[str, Any]]
    report: EpochReport
    elapsed_s: float
    loop_s: float

    def to_bytes(self) -> bytes:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["report"] = self.report.to_dict()
        buffer = io.BytesIO()
        torch.save({"format": CHECKPOINT_FORMAT, **data}, buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        """Reads `to_bytes` output with torch's weights-only unpickler, so a tampered file runs no code;
        anything else raises `CheckpointError`."""
        try:
            raw = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise CheckpointError(f"unreadable checkpoint: {exc}") from exc
        if not isinstance(raw, dict) or raw.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError("not a training checkpoint of a known format")
        try:
            values = {f.name: raw[f.name] for f in fields(cls)}
            values["report"] = EpochReport(**raw["report"])
        except (KeyError, TypeError) as exc:
            raise CheckpointError(f"incomplete checkpoint: {exc}") from exc
        return cls(**values)



@contextmanager
def seeded_rngs(seed: int) -> Iterator[None]:
    """Seeds the global RNGs of torch, numpy and Python for a run and gives the caller's back after it."""
    numpy_state, python_state = np.random.get_state(), random.getstate()
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        random.seed(seed)
        try:
            yield
        finally:
            np.random.set_state(numpy_state)
            random.setstate(python_state)


def rng_states(generator: torch.Generator) -> dict[str, Any]:
    """In types torch's weights-only loader accepts (no numpy arrays)."""
    _, keys, pos, has_gauss, cached_gaussian = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "shuffle": generator.get_state(),
        "numpy": {"keys": torch.from_numpy(np.asarray(keys, np.int64)), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached_gaussian)},
        "python": [version, list(internal), gauss_next],
    }


def restore_rngs(state: Mapping[str, Any], generator: torch.Generator) -> None:
    try:
        torch.set_rng_state(state["torch"])
        generator.set_state(state["shuffle"])
        numpy = state["numpy"]
        keys = numpy["keys"].numpy().astype(np.uint32)
        np.random.set_state(("MT19937", keys, numpy["pos"], numpy["has_gauss"], numpy["cached_gaussian"]))
        version, internal, gauss_next = state["python"]
        random.setstate((version, tuple(internal), gauss_next))
    except (KeyError, TypeError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"the checkpoint's RNG states are unusable: {exc}") from exc


def _copy_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}



def copy_state(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in state.items()}


