"""Event fan-out of one web process over /ws/v1/events (issue 14, item 1).

One uvicorn process with production settings (bench/service.py: private Redis, SQLite, pinned to CPU 0)
holds N websocket subscribers; this script, the load generator, runs on the other core (`make
bench-fanout` starts it under `taskset -c 1`). It publishes through the bus as the relay does
(`realtime.bus.publish`: the Lua append, then the Channels fan-out), each event carrying the wall-clock
time it was published, and measures publish->receive on every subscriber from raw sockets (a minimal
websocket client, so the generator's own cost per message stays small).

Scenarios (``--only NAME`` runs some):

- ``idle``: 5,000 subscribed sockets and no events; the server's RSS growth per socket.
- ``issue-200``/``issue-1000``/``issue-2000``: the issue's table, 2 events/s to one topic.
- ``one-topic``: 1,000 subscribers on one topic at 10 events/s (floor: p99 <= 25 ms).
- ``hundred-topics``: 10,000 subscribers over 100 topics, each topic 1 event/s (floor: p99 <= 250 ms).

    taskset -c 1 .venv/bin/python bench/fanout.py [--seconds 20] [--only one-topic]

Prints one JSON object with the machine's load average beside each figure; the table goes into
bench/RESULTS.md by hand.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import resource
import secrets
import struct
import sys
import time
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from accounting import cpu_seconds, machine_cpu_seconds
from service import Service, start_service


class Subscriber(asyncio.Protocol):
    """One /ws/v1/events socket: the handshake, then unmasked server frames parsed by hand; server pings
    answered. ``on_event`` gets each event's publish->receive seconds."""

    def __init__(self, host: str, port: int, key: str, stats: Stats, *, deflate: bool = False) -> None:
        # A browser offers permessage-deflate, and uvicorn accepts it by default: every message is then
        # compressed for each socket. --deflate measures that (this client inflates what it gets).
        offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n" if deflate else ""
        self.request = (
            f"GET /ws/v1/events HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {base64.b64encode(secrets.token_bytes(16)).decode()}\r\n{offer}"
            f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: bearer, {key}\r\n\r\n"
        ).encode()
        self.inflater = zlib.decompressobj(-zlib.MAX_WBITS) if deflate else None
        self.stats = stats
        self.buffer = b""
        self.open = False
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.subscribed: asyncio.Future[None] | None = None
        self.transport: asyncio.Transport | None = None
        self.last_seq: dict[str, int] = {}

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        transport.write(self.request)

    def connection_lost(self, exc: Exception | None) -> None:
        self.stats.lost += 1
        if not self.ready.done():
            self.ready.set_exception(ConnectionError("closed during the handshake"))

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.open:
            head, sep, rest = self.buffer.partition(b"\r\n\r\n")
            if not sep:
                return
            if b" 101 " not in head.split(b"\r\n", 1)[0]:
                self.ready.set_exception(ConnectionError(head[:200].decode(errors="replace")))
                return
            self.open, self.buffer = True, rest
            self.ready.set_result(None)
        self._frames()

    def _frames(self) -> None:
        buf = self.buffer
        pos = 0
        while len(buf) - pos >= 2:
            opcode, length = buf[pos] & 0x0F, buf[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if len(buf) - pos < 4:
                    break
                (length,) = struct.unpack_from("!H", buf, pos + 2)
                start = pos + 4
            elif length == 127:
                if len(buf) - pos < 10:
                    break
                (length,) = struct.unpack_from("!Q", buf, pos + 2)
                start = pos + 10
            if len(buf) - start < length:
                break
            payload = buf[start:start + length]
            if buf[pos] & 0x40 and self.inflater is not None:  # RSV1: a compressed message
                payload = self.inflater.decompress(payload + b"\x00\x00\xff\xff")
            pos = start + length
            if opcode == 1:
                self._message(payload)
            elif opcode == 9:
                self._send(0xA, payload)
            elif opcode == 8:
                self.stats.closed.append(struct.unpack_from("!H", payload)[0] if len(payload) >= 2 else 1005)
        self.buffer = buf[pos:]

    def _message(self, payload: bytes) -> None:
        now = time.time()
        message = json.loads(payload)
        if "seq" in message:
            topic, seq = message["topic"], message["seq"]
            previous = self.last_seq.get(topic)
            if previous is not None and seq != previous + 1:
                self.stats.out_of_order += 1
            self.last_seq[topic] = seq
            self.stats.record(now - message["data"]["t"])
        elif message.get("type") == "subscribed" and self.subscribed is not None and not self.subscribed.done():
            self.last_seq[message["topic"]] = message["last_seq"]
            self.subscribed.set_result(None)
        elif message.get("type") == "error":
            self.stats.errors.append(message)

    def _send(self, opcode: int, payload: bytes) -> None:
        mask = secrets.token_bytes(4)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        length = len(payload)
        head = bytes([0x80 | opcode])
        if length < 126:
            head += bytes([0x80 | length])
        elif length < 65536:
            head += bytes([0x80 | 126]) + struct.pack("!H", length)
        else:
            head += bytes([0x80 | 127]) + struct.pack("!Q", length)
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(head + mask + masked)

    async def subscribe(self, topic: str) -> None:
        self.subscribed = asyncio.get_running_loop().create_future()
        self._send(1, json.dumps({"op": "subscribe", "topic": topic, "since": None}).encode())
        await asyncio.wait_for(self.subscribed, 60)

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


@dataclass
class Stats:
    latencies: list[float] = field(default_factory=list)
    recording: bool = False
    out_of_order: int = 0
    lost: int = 0
    closed: list[int] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)

    def record(self, seconds: float) -> None:
        if self.recording:
            self.latencies.append(seconds)


def _rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * p))] if ordered else float("nan")


async def _connect(service: Service, count: int, topics: list[str], stats: Stats,
                   deflate: bool) -> list[Subscriber]:
    host, port = "127.0.0.1", int(service.url.rsplit(":", 1)[1])
    loop = asyncio.get_running_loop()
    subscribers: list[Subscriber] = []
    gate = asyncio.Semaphore(64)

    async def one(index: int) -> None:
        async with gate:
            _, sub = await loop.create_connection(
                lambda: Subscriber(host, port, service.api_key, stats, deflate=deflate), host, port)
            await asyncio.wait_for(sub.ready, 60)
            await sub.subscribe(topics[index % len(topics)])
            subscribers.append(sub)

    await asyncio.gather(*(one(i) for i in range(count)))
    return subscribers


async def _scenario(service: Service, name: str, *, subscribers: int, topics: int, rate_per_topic: float,
                    seconds: float, deflate: bool = False) -> dict[str, Any]:
    from realtime.bus import publish  # Django is set up by main() before any scenario runs

    stats = Stats()
    names = [f"user:fanout-{name}-{i}" for i in range(topics)]
    rss_before = _rss_kb(service.pid)
    started = time.monotonic()
    subs = await _connect(service, subscribers, names, stats, deflate)
    connect_seconds = time.monotonic() - started
    await asyncio.sleep(2)
    rss_connected = _rss_kb(service.pid)
    published = 0
    if rate_per_topic > 0:
        # Warm-up: a few events per topic, not recorded.
        for topic in names:
            await publish(topic, "tick", {"t": time.time()})
        await asyncio.sleep(1)
        stats.recording = True
        server_cpu0, client_cpu0 = cpu_seconds(service.pid), cpu_seconds(os.getpid())
        machine0 = machine_cpu_seconds()[0]
        wall0 = time.monotonic()
        interval = 1.0 / (rate_per_topic * topics)
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        end = next_at + seconds
        while loop.time() < end:
            await publish(names[published % topics], "tick", {"t": time.time()})
            published += 1
            next_at += interval
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        await asyncio.sleep(2)
        stats.recording = False
        wall = time.monotonic() - wall0
        server_cpu = cpu_seconds(service.pid) - server_cpu0
        client_cpu = cpu_seconds(os.getpid()) - client_cpu0
        other_cpu = machine_cpu_seconds()[0] - machine0 - server_cpu - client_cpu
    load = os.getloadavg()
    expected = published * subscribers // topics
    for sub in subs:
        sub.close()
    await asyncio.sleep(1)
    result: dict[str, Any] = {
        "scenario": name, "deflate": deflate, "subscribers": subscribers, "topics": topics,
        "events_per_s": rate_per_topic * topics,
        "seconds": seconds if rate_per_topic else 0, "connect_seconds": round(connect_seconds, 1),
        "rss_before_mb": round(rss_before / 1024, 1), "rss_connected_mb": round(rss_connected / 1024, 1),
        "rss_per_socket_kb": round((rss_connected - rss_before) / subscribers, 1),
        "load_average": [round(x, 2) for x in load],
    }
    if rate_per_topic:
        result.update({
            "published": published, "delivered": len(stats.latencies), "expected": expected,
            "p50_ms": round(_percentile(stats.latencies, 0.5) * 1000, 1),
            "p99_ms": round(_percentile(stats.latencies, 0.99) * 1000, 1),
            "max_ms": round(max(stats.latencies, default=float("nan")) * 1000, 1),
            # CPU the server spent per delivered event (one message to one socket), and cores used: the
            # per-core figure that holds whatever else the machine is doing.
            "server_cpu_cores": round(server_cpu / wall, 2), "client_cpu_cores": round(client_cpu / wall, 2),
            "other_cpu_cores": round(other_cpu / wall, 2),
            "server_us_per_delivery": round(server_cpu / max(1, len(stats.latencies)) * 1e6, 1),
            "out_of_order": stats.out_of_order, "closed": sorted(set(stats.closed)), "errors": stats.errors[:3],
        })
    return result


SCENARIOS: dict[str, dict[str, Any]] = {
    "idle": {"subscribers": 5000, "topics": 100, "rate_per_topic": 0.0},
    "issue-200": {"subscribers": 200, "topics": 1, "rate_per_topic": 2.0},
    "issue-1000": {"subscribers": 1000, "topics": 1, "rate_per_topic": 2.0},
    "issue-2000": {"subscribers": 2000, "topics": 1, "rate_per_topic": 2.0},
    "one-topic": {"subscribers": 1000, "topics": 1, "rate_per_topic": 10.0},
    "hundred-topics": {"subscribers": 10000, "topics": 100, "rate_per_topic": 1.0},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="scenarios to run (default: all)")
    parser.add_argument("--server-cpu", type=int, default=0, help="the core uvicorn is pinned to")
    parser.add_argument("--deflate", action="store_true", help="offer permessage-deflate, as browsers do")
    parser.add_argument("--ws", default=None, help="uvicorn's websocket implementation (UVICORN_WS), e.g. "
                        "websockets-sansio; default: what the launcher runs")
    args = parser.parse_args(argv)
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, 65536), hard))  # the server inherits it too
    extra = {"TORCHWIRE_WS_SEND_BUFFER": "1000", **({"UVICORN_WS": args.ws} if args.ws else {})}
    service = start_service(server_cpus={args.server_cpu}, extra_env=extra)
    try:
        os.environ.update(service.env)
        os.environ["DJANGO_SETTINGS_MODULE"] = "app.settings"
        import django

        django.setup()
        results = []
        for name in args.only or list(SCENARIOS):
            results.append(asyncio.run(_scenario(service, name, seconds=args.seconds, deflate=args.deflate,
                                                 **SCENARIOS[name])))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
        report = {"ws": args.ws or "default", "cpus": os.cpu_count(), "affinity": sorted(os.sched_getaffinity(0)),
                  "server_cpu": args.server_cpu,
                  "results": results}
        print(json.dumps(report, indent=2))
    finally:
        service.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
