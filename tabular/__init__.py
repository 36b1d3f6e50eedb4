"""Torchwire's tabular trainer: CSV profiling, feature encoding and training of ``tabular-mlp`` models.

A library with no Django dependency, beside `inference` (the serving runtime). It uses two public
pieces of `inference`: `inference.architectures` (the trained module is built by the same registry
that serving loads artifacts into, so the two cannot disagree on layers or config) and
`inference.errors.InferenceError` (the base of its errors, so every edge maps them as it maps the
runtime's). Nothing in `inference` imports `tabular`.

Modules, each with its public API in its docstring:

- `tabular.values`: the value rules (missing tokens, numbers, booleans, JSON values), used by all below.
- `tabular.profiling`: streaming CSV reading and column profiles.
- `tabular.features`: `FeaturePipeline`, the JSON-serialisable encoding of typed columns; `psi`.
- `tabular.split`: the seeded train / validation / test split.
- `tabular.options`: `Hyperparameters`.
- `tabular.training`: `train_tabular` and `TrainResult`.
- `tabular.tuning`: `tune_tabular`, the time-boxed search over a few options.
- `tabular.checkpoint`: `EpochReport`, `Checkpoint` (resumable runs), seeded RNGs.
- `tabular.metrics`: scores, `format_predictions`, `predict_records`.
- `tabular.errors`: `DatasetError`, `TrainingError`, `TrainingCancelled`, `CheckpointError`.
"""
