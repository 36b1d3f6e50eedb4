"""Self-signed certificates for `make run-prod`, and the per-checkout secrets kept under var/."""

from __future__ import annotations

import contextlib
import ipaddress
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

from app.launcher.process import LauncherError


def is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def certificate_ensure(cert: Path, key: Path, *, names: Sequence[str] = ("localhost", "127.0.0.1", "::1")) -> bool:
    """Makes a self-signed certificate for ``names`` unless both files exist. Returns whether it made one.

    Written beside the destination and renamed, so an interrupted run never leaves half a key."""
    if cert.exists() and key.exists():
        return False
    openssl = shutil.which("openssl")
    if openssl is None:
        raise LauncherError("openssl is not installed, so no self-signed certificate can be made; install it, "
                            "or set TORCHWIRE_TLS_CERT and TORCHWIRE_TLS_KEY to your own")
    cert.parent.mkdir(parents=True, exist_ok=True)
    key.parent.mkdir(parents=True, exist_ok=True)
    alt = ",".join(f"{'IP' if is_ip(name) else 'DNS'}:{name}" for name in names)
    with tempfile.TemporaryDirectory(dir=key.parent) as scratch:
        new_cert, new_key = Path(scratch) / "cert.pem", Path(scratch) / "key.pem"
        result = subprocess.run(
            [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-sha256", "-days", "825", "-subj", f"/CN={names[0]}", "-addext", f"subjectAltName={alt}",
             "-keyout", str(new_key), "-out", str(new_cert)],
            capture_output=True, text=True, check=False,
        )
        if result.returncode != 0:
            raise LauncherError(f"openssl could not make a certificate: {result.stderr.strip()}")
        new_key.chmod(0o600)
        os.replace(new_key, key)
        shutil.move(new_cert, cert)
    return True


def secret_key_file(var_dir: Path, name: str = "secret-key.txt") -> str:
    """The same per-checkout key app/settings.py keeps for development (var/secret-key.txt, mode 600), so
    every production child signs alike and tokens survive a restart (also the console's cookie key)."""
    path = var_dir / name
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(50))
    return path.read_text().strip()
