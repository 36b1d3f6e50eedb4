"""`python -m app.launcher`: the command line."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from app import console_build
from app.launcher.certs import certificate_ensure
from app.launcher.children import log
from app.launcher.nginx import prod_layout
from app.launcher.process import LauncherError, read_settings
from app.launcher.supervisor import Config, Launcher


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m app.launcher",
                                     description="Run Torchwire: web, worker, beat and an embedded Redis")
    mode = parser.add_mutually_exclusive_group()
    mode.add_argument("--prod", action="store_true", help="the production layout behind nginx (make run-prod)")
    mode.add_argument("--certs", action="store_true", help="make the self-signed certificate (make certs)")
    mode.add_argument("--nginx-conf", action="store_true", help="render and check the nginx config")
    mode.add_argument("--build-console", action="store_true", help="build the web console if its sources changed")
    args = parser.parse_args(argv)
    try:
        if args.certs:
            env = read_settings()
            cert, key = env.tls_cert, env.tls_key
            made = certificate_ensure(cert, key)
            log(f"{'made' if made else 'kept'} {cert} and {key}")
            return 0
        if args.build_console:
            try:
                console_build.ensure_built(log=log)
            except console_build.ConsoleBuildError as exc:
                raise LauncherError(str(exc)) from None
            return 0
        if args.nginx_conf:
            config = Config.from_env(prod=True)
            config.var_dir.mkdir(parents=True, exist_ok=True)
            layout = prod_layout(config)
            log(f"rendered {layout.site.conf}; nginx accepts it")
            return 0
        return Launcher(Config.from_env(prod=args.prod)).run()
    except LauncherError as exc:
        log(f"error: {exc}")
        return 1
