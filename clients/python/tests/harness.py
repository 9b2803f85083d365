"""Real processes for the client tests: the gateway binary (AGENTICAI_BIN), publishing over its
HTTP API, tokens from its ``token`` command, and a TCP proxy standing in for a load balancer.
Redis is started by scripts/checks/client-tests.sh (REDIS_PORT)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Awaitable, Callable, Optional, TypeVar

BIN = os.environ.get("AGENTICAI_BIN", "")
REDIS_URL = f"redis://127.0.0.1:{os.environ['REDIS_PORT']}" if os.environ.get("REDIS_PORT") else None
JWT_SECRET = "3f" * 32

T = TypeVar("T")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def unique_project(name: str) -> str:
    return f"{name}-{secrets.token_hex(4)}"


async def wait_for(what: str, check: Callable[[], Any], timeout: float = 15.0) -> Any:
    """Polls ``check`` every 25 ms until it returns something truthy or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.025)


class Server:
    """The gateway on loopback, with the settings the tests need on top of ``env``."""

    def __init__(
        self,
        port: Optional[int] = None,
        env: Optional[dict[str, str]] = None,
        prepare: Callable[[Path], None] = lambda data_dir: None,
    ) -> None:
        self.port = port or free_port()
        self.url = f"ws://127.0.0.1:{self.port}/ws"
        self.data_dir = Path(tempfile.mkdtemp(prefix="agenticai-client-test-"))
        prepare(self.data_dir)
        log = open(self.data_dir / "server.log", "ab")
        self.process = subprocess.Popen(
            [BIN],
            env={
                "PATH": os.environ.get("PATH", ""),
                "WEBSOCKET_HOST": "127.0.0.1",
                "WEBSOCKET_PORT": str(self.port),
                "DATA_DIR": str(self.data_dir),
                "DRAIN_SECONDS": "1",
                "RUST_LOG": "warn",
                **(env or {}),
            },
            stdout=log,
            stderr=log,
        )
        log.close()

    @classmethod
    async def start(
        cls,
        port: Optional[int] = None,
        env: Optional[dict[str, str]] = None,
        prepare: Callable[[Path], None] = lambda data_dir: None,
    ) -> "Server":
        """Starts it (``prepare(data_dir)`` first) and waits until it answers /ready."""
        assert BIN, "set AGENTICAI_BIN to the gateway binary (scripts/checks/client-tests.sh does)"
        server = cls(port, env, prepare)
        await wait_for(f"the server on port {server.port} (log: {server.data_dir}/server.log)", server._ready)
        return server

    def _ready(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"the server exited: {(self.data_dir / 'server.log').read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/ready", timeout=1) as response:
                return bool(response.status == 200)
        except (OSError, urllib.error.URLError):
            return False

    async def stop(self) -> None:
        """SIGTERM: the server drains (clients get 1012) and exits 0."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        code = await asyncio.to_thread(self.process.wait, 30)
        assert code == 0, f"the server exits 0 after draining (log: {self.data_dir}/server.log)"

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait()


def failing_dev_queue(data_dir: Path) -> None:
    """A ``prepare`` for Server.start: the dev queue's spool is /dev/full, so every forward to it fails."""
    (data_dir / "spool").mkdir()
    (data_dir / "spool" / "dev.jsonl").symlink_to("/dev/full")


def _publish(port: int, project_id: str, data: Any) -> Optional[dict[str, Any]]:
    body = json.dumps({"project_id": project_id, "type": "step", "data": data}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/publish", body, {"Content-Type": "application/json"}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return dict(json.load(response))
    except (OSError, urllib.error.URLError):
        return None


async def publish(port: int, project_id: str, data: Any) -> Optional[dict[str, Any]]:
    """POST /api/v1/publish; the receipt, or None when refused or unreachable."""
    return await asyncio.to_thread(_publish, port, project_id, data)


async def publish_stream(
    project_id: str,
    count: int,
    target: Callable[[], int],
    on_published: Callable[[int], Awaitable[None]],
    interval: float = 0.015,
) -> None:
    """Publishes ``{"n": 0..count-1}``, retrying a number until a server accepted it: a refused
    or unreachable publish reached nobody, so the stream holds each number once."""
    for n in range(count):
        deadline = time.monotonic() + 20
        while not await publish(target(), project_id, {"n": n}):
            assert time.monotonic() < deadline, f"no server accepted publication {n}"
            await asyncio.sleep(0.02)
        await on_published(n)
        await asyncio.sleep(interval)


def mint_token(projects: str = "*", ttl: int = 60, sub: str = "alice", scope: Optional[str] = None) -> str:
    """A connection token signed with JWT_SECRET by the server's own ``token`` command (``scope``:
    space-separated; absent, the command's default)."""
    output = subprocess.run(
        [BIN, "token", "--sub", sub, "--projects", projects, "--ttl", str(ttl), *(["--scope", scope] if scope else [])],
        env={"JWT_SECRET": JWT_SECRET},
        check=True,
        capture_output=True,
    )
    return output.stdout.decode().strip()


class Proxy:
    """A TCP proxy on loopback sending each new connection to ``target`` (a port): a load balancer.
    Until ``refuse_until`` (a time.monotonic() time) it drops new connections, as a load balancer
    does while it registers a new target."""

    def __init__(self, target: int) -> None:
        self.target = target
        self.refuse_until = 0.0
        self.url = ""
        self._server: Optional[asyncio.Server] = None
        self._writers: set[asyncio.StreamWriter] = set()

    async def start(self) -> "Proxy":
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.url = f"ws://127.0.0.1:{self._server.sockets[0].getsockname()[1]}/ws"
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if time.monotonic() < self.refuse_until:
            writer.close()
            return
        try:
            upstream_reader, upstream_writer = await asyncio.open_connection("127.0.0.1", self.target)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, upstream_writer}
        await asyncio.gather(self._pipe(reader, upstream_writer), self._pipe(upstream_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while chunk := await reader.read(65536):
                writer.write(chunk)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()
            self._writers.discard(writer)

    def cut(self) -> None:
        """Drops the connections open now (a network loss: no close frame); new ones still pass."""
        for writer in list(self._writers):
            writer.close()

    def close(self) -> None:
        self.cut()
        if self._server:
            self._server.close()


async def until(awaitable: Awaitable[T], timeout: float = 15.0) -> T:
    return await asyncio.wait_for(awaitable, timeout)


def queue_messages(server: Server, role: str) -> list[dict[str, Any]]:
    """The messages a queue received in the server's local spool (``DATA_DIR/spool/<role>.jsonl``)."""
    try:
        lines = (server.data_dir / "spool" / f"{role}.jsonl").read_text().splitlines()
    except FileNotFoundError:
        return []
    return [json.loads(line) for line in lines if line]
