"""`manage.py train` runs the job in-process with a progress bar fed by the job's event stream."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.envsetup import ROOT
from tests.jobs.conftest import classification_csv
from tests.support import child_env

pytestmark = pytest.mark.django_db(transaction=True)


def test_train_command(tmp_path, service_env, make_user):
    owner = make_user("member")
    data = tmp_path / "churn.csv"
    data.write_bytes(classification_csv(rows=300))
    result = subprocess.run(
        [sys.executable, "manage.py", "train", "--dataset", str(data), "--target", "label", "--user", owner.username,
         "--hyperparameters", '{"epochs": 15, "patience": 15, "hidden": [16]}', "--promote"],
        cwd=ROOT, env=child_env(service_env), capture_output=True, text=True, timeout=240,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "epoch 15/15" in result.stdout
    assert "model churn version 1 (production)" in result.stdout
    from app.registry.models import ModelVersion

    assert ModelVersion.objects.filter(model__name="churn", stage="production").count() == 1

    bad = subprocess.run([sys.executable, "manage.py", "train", "--dataset", str(data), "--target", "nope",
                          "--user", owner.username], cwd=ROOT, env=child_env(service_env), capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode != 0 and "no column 'nope'" in bad.stderr
