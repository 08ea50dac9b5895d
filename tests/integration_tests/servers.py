"""Start a real server as a subprocess on 127.0.0.1 for a test, and always stop it; what the
real-server tests ask it, and how they see what was sent."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest

from langchain_llava_cot.demo import DEMO_MODEL_PATH, DEMO_QUESTION, EXAMPLE_IMAGE
from langchain_llava_cot.images import image_message

DEMO_MESSAGES = [image_message(EXAMPLE_IMAGE.read_bytes(), DEMO_QUESTION)]
"""The bundled question about the bundled picture, as ChatLlavaCoT's input."""

STAGE_LIMITS = {"summary": 60, "caption": 120, "reasoning": 300, "conclusion": 60}
"""Stage limits whose sum, with the prompt, fits the demo model's 1,024 positions."""

VLLM_PYTHON = Path(__file__).parents[2] / ".venv-vllm" / "bin" / "python"
"""The real-server lane's vLLM (its CPU build), from ``make vllm-venv``."""


def record_chat_requests(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """From now on, the body of every ``/chat/completions`` request an httpx client sends."""
    sent: list[dict] = []
    send = httpx.Client.send

    def recorded(client: httpx.Client, request: httpx.Request, **options: object) -> httpx.Response:
        if request.url.path.endswith("/chat/completions"):
            sent.append(json.loads(request.content))
        return send(client, request, **options)

    monkeypatch.setattr(httpx.Client, "send", recorded)
    return sent


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
    with running_servers([(command, ready_url, log_path)], env=env, cwd=cwd, timeout=timeout):
        yield


@contextmanager
def running_servers(
    servers: Sequence[tuple[Sequence[str], str, Path]],
    *,
    env: Mapping[str, str],
    cwd: Path | None = None,
    timeout: float = 90,
) -> Iterator[None]:
    """Start every ``(command, ready_url, log_path)`` at once, wait until all answer 200, then yield.

    They start side by side, so slow starts overlap; all are terminated afterwards. Fails the
    test, with the end of a server's log, if one exits or is not ready in time.
    """
    processes = []
    try:
        for command, _, log_path in servers:
            with open(log_path, "wb") as log:
                processes.append(
                    subprocess.Popen(command, cwd=cwd, env=dict(env), stdout=log, stderr=subprocess.STDOUT)
                )
        deadline = time.monotonic() + timeout
        for process, (command, ready_url, log_path) in zip(processes, servers):
            _wait_until_ready(process, Path(command[0]).name, ready_url, log_path, deadline, timeout)
        yield
    finally:
        for process in processes:
            process.terminate()
        for process in processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_until_ready(
    process: subprocess.Popen, name: str, ready_url: str, log_path: Path, deadline: float, timeout: float
) -> None:
    while True:
        if process.poll() is not None:
            pytest.fail(f"{name} exited with {process.returncode}:\n{log_path.read_text()[-3000:]}")
        try:
            if httpx.get(ready_url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            pytest.fail(f"{name} was not ready within {timeout:.0f} s:\n{log_path.read_text()[-3000:]}")
        time.sleep(0.25)


@contextmanager
def vllm_serving_demo(folder: Path) -> Iterator[str]:
    """vLLM on 127.0.0.1 serving the demo model as "demo" (cache and log in ``folder``); yields its URL.

    It may take 600 s to be ready: on this project's 2-core machine, shared with other jobs, vLLM took
    over 300 s to start.
    """
    port = free_port()
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "VLLM_TARGET_DEVICE": "cpu",
        "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_NO_USAGE_STATS": "1",
        "VLLM_CACHE_ROOT": str(folder / "cache"),
    }
    command = [
        str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(DEMO_MODEL_PATH),
        "--served-model-name", "demo", "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "1024",
        "--dtype", "float32", "--max-num-seqs", "16", "--enforce-eager",
    ]  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    # About 25 s on an idle machine; over 600 s measured on two cores shared by a training run and other
    # tests (each of vLLM's three processes imports torch and vLLM).
    with running_server(
        command, ready_url=f"{url}/v1/models", log_path=folder / "vllm.log", env=env, timeout=900
    ):
        yield url


def served_eval(
    url: str, folder: Path, monkeypatch: pytest.MonkeyPatch, questions: int = 8
) -> tuple[Any, int]:
    """``llava-cot eval``'s run on a tiny benchmark file through a server at ``url``, 8 questions in flight.

    Returns the report and the most requests that were open at once.
    """
    from langchain_llava_cot.backends.openai import transport
    from langchain_llava_cot.eval import run_eval
    from langchain_llava_cot.eval.demo_files import demo_rows, write_benchmark

    data = write_benchmark(folder / "bench.jsonl", demo_rows(questions, phrasing="trained"))
    post = transport.apost_within
    open_now, most = [0], [0]

    async def counted(*args: Any, **kwargs: Any) -> Any:
        open_now[0] += 1
        most[0] = max(most[0], open_now[0])
        try:
            return await post(*args, **kwargs)
        finally:
            open_now[0] -= 1

    monkeypatch.setattr(transport, "apost_within", counted)
    # 8 questions in flight wait in the server's queue (llama-server answers 4 at once) on CPU cores
    # shared with other work: a reply may take minutes, queueing included, where alone it takes a second.
    report = run_eval(
        data=data, base_url=f"{url}/v1", served_model="demo", strategies=["greedy", "best_of_n:likelihood:4"],
        concurrency=8, output_dir=folder / "out", progress=False, max_stage_tokens=STAGE_LIMITS, timeout=240,
    )  # fmt: skip
    return report, most[0]
