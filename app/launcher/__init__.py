"""`make run` and `make run-prod`: the whole service on one machine, from one command.

Creates the var dir, starts an embedded Redis when REDIS_URL is unset, migrates, ensures the first admin,
then runs uvicorn, one Celery worker and Celery beat as children and supervises them. SIGINT, SIGTERM or
SIGHUP stops them in dependency order (web first so nothing new is queued, Redis last so it can save). A
child that dies on its own is restarted after a backoff while the others go on serving; one that crashes
TORCHWIRE_CHILD_MAX_CRASHES times within TORCHWIRE_CHILD_CRASH_WINDOW_SECONDS takes the rest down, with its
exit status and last output in the log, and the launcher exits non-zero.

``--prod`` (`make run-prod`) runs the production layout instead: DJANGO_ENV=production, static files
collected for nginx, N uvicorn workers each on its own unix socket under var/run, and nginx in front of
them (TLS on HTTPS_PORT, redirects on HTTP_PORT) rendered from the templates in nginx/.
``--certs`` makes the self-signed certificate and ``--nginx-conf`` renders and checks the nginx config.

Django is never imported here: everything Django-shaped runs in a child, so the children and the
launcher cannot disagree about settings: both read app/config.py, which declares the launcher's own
variables too (docs/deployment.md lists them).

The package: `process` (start a process and wait until it answers; shared with tests/envsetup.py and
bench/service.py), `children` (one supervised child), `supervisor` (the start and stop order),
`nginx` (the production layout), `certs` (certificates and per-checkout secrets), `cli` (`main`).
"""

from app.launcher.certs import certificate_ensure
from app.launcher.cli import main
from app.launcher.nginx import (
    NginxSite,
    _rate_per_second,
    nginx_binary,
    nginx_version,
    render_template,
    web_worker_argv,
)
from app.launcher.process import LauncherError
from app.launcher.supervisor import Config, Launcher

__all__ = [
    "Config",
    "Launcher",
    "LauncherError",
    "NginxSite",
    "_rate_per_second",
    "certificate_ensure",
    "main",
    "nginx_binary",
    "nginx_version",
    "render_template",
    "web_worker_argv",
]
