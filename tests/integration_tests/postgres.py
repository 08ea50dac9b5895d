"""A throwaway PostgreSQL server: ``initdb`` in a temporary folder, ``pg_ctl`` on 127.0.0.1."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from servers import free_port


def _as_server_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root; there, run it as the ``postgres`` user."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _run(command: list[str]) -> None:
    done = subprocess.run(_as_server_user(command), capture_output=True, text=True)
    if done.returncode:
        msg = f"{' '.join(command[:2])} failed ({done.returncode}): {done.stderr or done.stdout}"
        raise RuntimeError(msg)


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start a fresh PostgreSQL; yields its connection string; stops it and deletes its files afterwards.

    Its folder is made directly under the system's temporary folder, where the server's
    own user can reach it (pytest's temporary folders are private to the user running it).
    """
    folder = Path(tempfile.mkdtemp(prefix="llava-cot-postgres-"))
    try:
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres")
        data, port = folder / "data", free_port()
        _run(["initdb", "-D", str(data), "-A", "trust", "-U", "postgres"])
        options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
        _run(["pg_ctl", "-D", str(data), "-o", options, "-l", str(folder / "log"), "-w", "start"])
        try:
            yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
        finally:
            subprocess.run(_as_server_user(["pg_ctl", "-D", str(data), "-m", "immediate", "-w", "stop"]))
    finally:
        shutil.rmtree(folder, ignore_errors=True)
