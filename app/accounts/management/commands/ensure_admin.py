from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from app.accounts.services import admin_ensure


class Command(BaseCommand):
    help = "Create the first 'admin' user with a random password (printed once, kept in var/admin-password.txt)."

    def handle(self, *args: Any, **options: Any) -> None:
        path = Path(settings.VAR_DIR) / "admin-password.txt"
        password = admin_ensure(password_file=path)
        if password is None:
            self.stdout.write("admin user exists; nothing to do")
            return
        bar = "=" * 72
        self.stdout.write(
            f"{bar}\nCreated user 'admin' with password: {password}\n"
            f"(shown once; also stored in {path}, mode 600)\n{bar}"
        )
