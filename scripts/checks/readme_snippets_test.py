"""Runs the README's JavaScript and Python client snippets as printed (only their port 8080
changed to a free one) against the gateway on loopback without tokens, as a newcomer would:
each must connect, have its forward written to the local spool, and print a message published
over the HTTP API. Run by scripts/checks/client-tests.sh with the test venv's Python (the one
with the built wheel installed, which the Python snippet imports).

Usage: python readme_snippets_test.py BIN README [NODE_FLAG...]
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

PROJECT_ID = "proj-42"  # the project the snippets follow
TIMEOUT_SECS = 20.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def first_block(readme: str, language: str) -> str:
    found = re.search(rf"^```{language}\n(.*?)^```", readme, re.MULTILINE | re.DOTALL)
    if not found:
        raise SystemExit(f"the README has no ```{language} block")
    return found.group(1)


def wait_until(what: str, check, output: Path | None = None) -> None:
    deadline = time.monotonic() + TIMEOUT_SECS
    while not check():
        if time.monotonic() > deadline:
            shown = f"; its output:\n{output.read_text()}" if output else ""
            raise SystemExit(f"timed out waiting for {what}{shown}")
        time.sleep(0.2)


def publish(port: int, marker: str) -> None:
    body = json.dumps({"project_id": PROJECT_ID, "type": "readme", "data": {"marker": marker}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/publish", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=5) as response:
        response.read()


def run_snippet(name: str, command: list[str], workdir: Path, port: int) -> None:
    """Starts the snippet, publishes until it prints the publication, then stops it."""
    output = workdir / f"{name}.out"
    with output.open("wb") as sink:
        process = subprocess.Popen(command, cwd=workdir, stdout=sink, stderr=subprocess.STDOUT)
    try:
        marker = f"readme-snippet-{name}"

        def arrived() -> bool:
            if process.poll() is not None:
                raise SystemExit(f"the {name} snippet exited with {process.returncode}:\n{output.read_text()}")
            if marker in output.read_text():
                return True
            publish(port, marker)  # again: the snippet may not have subscribed yet
            return False

        wait_until(f"the {name} snippet to print a publication", arrived, output)
        print(f"{name} snippet, as printed:\n{output.read_text()}")
    finally:
        process.kill()
        process.wait()


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    binary, readme = sys.argv[1], Path(sys.argv[2]).read_text()
    node_flags = sys.argv[3:]
    root = Path(__file__).resolve().parents[2]
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="readme-snippets-") as work:
        workdir = Path(work)
        (workdir / "clients").symlink_to(root / "clients")  # the JavaScript snippet imports ./clients/js/...
        (workdir / "snippet.mjs").write_text(first_block(readme, "js").replace(":8080", f":{port}"))
        (workdir / "snippet.py").write_text(first_block(readme, "python").replace(":8080", f":{port}"))
        data_dir = workdir / "data"
        server_log = (workdir / "server.log").open("wb")
        server = subprocess.Popen(
            [binary],
            env={
                "PATH": os.environ.get("PATH", ""),
                "WEBSOCKET_HOST": "127.0.0.1",
                "WEBSOCKET_PORT": str(port),
                "DATA_DIR": str(data_dir),
                "RUST_LOG": "warn",
            },
            stdout=server_log,
            stderr=server_log,
        )
        try:

            def healthy() -> bool:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1):
                        return True
                except OSError:
                    return False

            wait_until("the server", healthy)
            run_snippet("javascript", ["node", *node_flags, "snippet.mjs"], workdir, port)
            run_snippet("python", [sys.executable, "-u", "snippet.py"], workdir, port)
            spool = data_dir / "spool" / "dev.jsonl"
            forwards = [line for line in spool.read_text().splitlines() if "fix the login" in line]
            if len(forwards) != 2:
                raise SystemExit(f"expected both snippets' forwards in {spool}, found {len(forwards)}")
            print(f"both snippets' forwards are in the spool ({spool.name})")
        finally:
            server.terminate()
            server.wait()
            server_log.close()


if __name__ == "__main__":
    main()
