"""python manage.py backup: database dump and object manifest under backups/<UTC timestamp>/ in the storage."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError

from app.system.backups import BackupError, backup_create


class Command(BaseCommand):
    # The system checks import the URLconf and with it torch; this command needs neither.
    requires_system_checks: list[str] = []
    help = ("Write a consistent database dump and a manifest of every artifact, dataset and job output (with its "
            "sha256) to the storage under backups/<UTC timestamp>/. Prints the backup's prefix last.")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            manifest = backup_create()
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        database, counts = manifest["database"], manifest["counts"]
        self.stdout.write(
            f"{database['engine']} dump {database['size']} bytes (sha256 {database['sha256']}); "
            f"{counts['artifact']} artifacts, {counts['dataset']} datasets, {counts['job_output']} job outputs "
            f"listed in {manifest['prefix']}/manifest.json on {manifest['storage']}"
        )
        self.stdout.write(manifest["prefix"])
