"""python manage.py train --dataset data.csv --target y [--task ...] [--model name] [--user admin] ...

Runs the same job the API runs (dataset upload, job row, the worker's runner) in this process, and draws
a live progress bar from the job's event stream, exactly what a websocket subscriber would see.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from app.accounts.models import Role, User
from app.core.errors import ApiError
from app.datasets.services import dataset_upload
from app.jobs.runner import job_run
from app.jobs.services import job_train_create
from inference import jsonio
from realtime.bus import backlog


class Command(BaseCommand):
    help = "Train a tabular model from a CSV with a live progress bar (the same job as POST /api/v1/jobs/train)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--dataset", required=True, type=Path, help="CSV file with a header row")
        parser.add_argument("--target", required=True, help="the column to predict")
        parser.add_argument("--task", choices=["classification", "regression"], default=None,
                            help="default: regression for a numeric target, else classification")
        parser.add_argument("--model", dest="model_name", default=None, help="model name (default: the file's stem)")
        parser.add_argument("--features", default=None, help="comma-separated feature columns (default: all others)")
        parser.add_argument("--user", default=None, help="owner of the dataset, job and model (default: first admin)")
        parser.add_argument("--hyperparameters", default="{}", help='JSON, e.g. \'{"epochs": 50, "hidden": [32]}\'')
        parser.add_argument("--promote", action="store_true", help="put the new version in production")

    def handle(self, *args: Any, **opts: Any) -> None:
        path: Path = opts["dataset"]
        if not path.is_file():
            raise CommandError(f"{path} is not a file")
        user = self._user(opts["user"])
        try:
            hyper = jsonio.loads(opts["hyperparameters"])
        except ValueError as exc:
            raise CommandError(f"--hyperparameters is not JSON: {exc}") from exc
        try:
            dataset = asyncio.run(dataset_upload(owner=user, name=path.name, path=path))
            columns = {c["name"]: c for c in dataset.profile["columns"]}
            if opts["target"] not in columns:
                raise CommandError(f"no column {opts['target']!r}; columns: {', '.join(columns)}")
            task = opts["task"] or ("regression" if columns[opts["target"]]["kind"] == "numeric" else "classification")
            features = opts["features"].split(",") if opts["features"] else None
            name = opts["model_name"] or "".join(ch if ch.isalnum() else "-" for ch in path.stem.lower()).strip("-")
            job = job_train_create(owner=user, dataset_id=dataset.pk, target=opts["target"], task=task,
                                   model_name=name[:64] or "model", features=features, hyperparameters=hyper,
                                   promote=opts["promote"])
        except ApiError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(f"dataset {dataset.pk} ({dataset.row_count} rows), job {job.pk}: training {name!r} ({task})")

        outcome: dict[str, str] = {}
        runner = threading.Thread(target=lambda: outcome.setdefault("result", job_run(job_id=job.pk)), daemon=True)
        runner.start()
        final = asyncio.run(self._follow(f"job:{job.pk}", runner))
        runner.join()
        sys.stdout.write("\n")
        if final is None or final.type != "succeeded":
            detail = final.data.get("error") if final is not None else outcome.get("result")
            raise CommandError(f"job {job.pk} did not succeed: {detail}")
        data = final.data
        metrics = ", ".join(f"{k}={v:.4g}" for k, v in data.get("metrics", {}).items() if isinstance(v, int | float))
        summary = f"model {data['model']} version {data['version']} ({data['stage']}): {metrics}"
        self.stdout.write(self.style.SUCCESS(summary))

    def _user(self, username: str | None) -> User:
        if username:
            user = User.objects.filter(username=username, is_active=True).first()
        else:
            user = User.objects.filter(role=Role.ADMIN, is_active=True).order_by("pk").first()
        if user is None:
            raise CommandError("no such user; pass --user, or create an admin first (manage.py ensure_admin)")
        return user

    async def _follow(self, topic: str, runner: threading.Thread) -> Any:
        """Reads the topic's event log from the start, drawing the bar, until a terminal event."""
        since, final = 0, None
        while final is None:
            got = await backlog(topic, since)
            if got.events is None:
                # The log no longer holds our position (trimmed, or Redis lost it): skip to its end; the
                # runner's own result still tells how the job ended.
                since = got.position.seq
                continue
            for event in got.events:
                since = event.seq
                if event.type == "epoch":
                    self._bar(event.data)
                elif event.type in ("succeeded", "failed", "cancelled"):
                    final = event
            if final is None and not runner.is_alive() and not got.events:
                break
            await asyncio.sleep(0.2)
        return final

    def _bar(self, data: dict[str, Any], width: int = 30) -> None:
        epoch, epochs = int(data["epoch"]), max(int(data["epochs"]), 1)
        filled = int(width * epoch / epochs)
        line = (f"\r[{'#' * filled}{'.' * (width - filled)}] epoch {epoch}/{epochs} "
                f"loss {data['train_loss']:.4f} val {data['val_loss']:.4f} {data['metric_name']} {data['metric']:.4f} "
                f"eta {data['eta_s']:.0f}s ")
        sys.stdout.write(line)
        sys.stdout.flush()
        time.sleep(0)
