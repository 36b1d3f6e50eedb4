"""python manage.py restore <backup>: into an empty database, after verifying every stored object's sha256."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from app.system.backups import BackupError, backup_restore


class Command(BaseCommand):
    # The system checks import the URLconf and with it torch; this command needs neither.
    requires_system_checks: list[str] = []
    help = ("Restore a backup (backups/<stamp>, the stamp alone, or 'latest') into the database of DATABASE_URL, "
            "which must be empty. The dump and every artifact, dataset and job output it lists are checked "
            "against their sha256 first; any mismatch stops the restore before the database is written.")

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("backup", help="backups/<YYYYmmddTHHMMSSZ>, the stamp alone, or 'latest'")
        parser.add_argument("--ignore-mismatches", action="store_true",
                            help="restore even when stored objects are missing or altered (they are listed)")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            result = backup_restore(name=options["backup"], ignore_mismatches=options["ignore_mismatches"])
        except BackupError as exc:
            raise CommandError(str(exc)) from exc
        for mismatch in result.mismatches:
            self.stderr.write(f"warning: {mismatch}")
        verified = result.objects - len(result.mismatches)
        self.stdout.write(self.style.SUCCESS(
            f"restored {result.prefix}; {verified} of {result.objects} stored objects verified"
        ))
