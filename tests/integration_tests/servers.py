"""Start a real server as a subprocess on 127.0.0.1 for a test, and always stop it."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_server(
    command: Sequence[str],
    *,
    ready_url: str,
    log_path: Path,
    env: Mapping[str, str],
    cwd: Path | None = None,
    timeout: float = 90,
) -> Iterator[None]:
    """Run ``command`` until ``ready_url`` answers 200, then yield; terminate it afterwards.

    Fails the test, with the end of the server's log, if it exits or is not ready in time.
    """
    name = Path(command[0]).name
    with open(log_path, "wb") as log:
        process = subprocess.Popen(command, cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                pytest.fail(f"{name} exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
            try:
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"{name} was not ready within {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.25)
        yield
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
