"""Hosts made of network namespaces: each host is a namespace with one veth pair whose other end is on
a bridge in the root namespace (which has the subnet's .1, so this process reaches every host). The
filesystem is shared, as a network file system or S3 would be between real hosts; the network is not:
a process in one host reaches another only through its address on the bridge."""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def netns_refusal() -> str | None:
    """Why this machine will not make network namespaces (not root, no CAP_NET_ADMIN, no iproute2), or None."""
    probe = f"twprobe{secrets.token_hex(3)}"
    try:
        made = _ip("netns", "add", probe, check=False)
    except FileNotFoundError:
        return "the `ip` command (iproute2) is not installed"
    if made.returncode != 0:
        return f"`ip netns add` is not permitted: {made.stderr.strip()}"
    _ip("netns", "del", probe, check=False)
    return None


@dataclass
class Host:
    name: str
    ns: str
    ip: str
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def popen(self, argv: Sequence[str], *, env: Mapping[str, str], log: Path, cwd: Path) -> subprocess.Popen[bytes]:
        with log.open("ab") as fh:
            proc = subprocess.Popen(["ip", "netns", "exec", self.ns, *argv], cwd=cwd, env=dict(env), stdout=fh,
                                    stderr=subprocess.STDOUT, start_new_session=True)
        self.procs.append(proc)
        return proc

    def run(self, argv: Sequence[str], **kwargs: object) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(["ip", "netns", "exec", self.ns, *argv], **kwargs)  # type: ignore[call-overload, no-any-return]

    def pids(self) -> list[int]:
        listed = _ip("netns", "pids", self.ns, check=False).stdout.split()
        return [int(pid) for pid in listed if pid.isdigit()]

    def kill_all(self) -> list[int]:
        """SIGKILL every process in the host (its namespace), as a host that loses power."""
        killed = []
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
            except ProcessLookupError:
                pass
        for proc in self.procs:
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass
        return killed


class Topology:
    """A bridge and the hosts on it, on 10.<a>.<b>.0/24; `destroy` removes every namespace and link."""

    def __init__(self) -> None:
        self.tag = secrets.token_hex(2)
        octet = int(self.tag, 16)
        self.subnet = f"10.{200 + octet % 50}.{octet % 250}"
        self.bridge = f"twbr{self.tag}"
        self.hosts: dict[str, Host] = {}
        self._next = 2
        _ip("link", "add", self.bridge, "type", "bridge")
        _ip("addr", "add", f"{self.subnet}.1/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")

    @property
    def gateway(self) -> str:
        return f"{self.subnet}.1"

    def add_host(self, name: str) -> Host:
        index = self._next
        self._next += 1
        ns, inner, outer = f"tw{self.tag}-{name}", f"tw{self.tag}h{index}", f"tw{self.tag}b{index}"
        ip = f"{self.subnet}.{index}"
        _ip("netns", "add", ns)
        _ip("link", "add", inner, "type", "veth", "peer", "name", outer)
        _ip("link", "set", inner, "netns", ns)
        _ip("link", "set", outer, "master", self.bridge)
        _ip("link", "set", outer, "up")
        _ip("-n", ns, "addr", "add", f"{ip}/24", "dev", inner)
        _ip("-n", ns, "link", "set", inner, "up")
        _ip("-n", ns, "link", "set", "lo", "up")
        host = self.hosts[name] = Host(name=name, ns=ns, ip=ip)
        return host

    def destroy(self) -> None:
        for host in self.hosts.values():
            host.kill_all()
            _ip("netns", "del", host.ns, check=False)
        _ip("link", "del", self.bridge, check=False)
        # A veth end left in the root namespace goes when its peer's namespace does; wait for that.
        time.sleep(0.2)
