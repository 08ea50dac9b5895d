"""What ``llava-cot serve`` costs over calling ``ChatLlavaCoT`` directly, measured in one run.

    python benchmarks/serve_cost.py --out serve-cost.json

Both sides answer the same held-out demo questions (each with its own picture) with the same
search (``--strategy``, ``--candidates``, unseeded so concurrent searches may share batches):

- ``direct``: ``ChatLlavaCoT.ainvoke`` in this process, ``c`` requests at a time;
- ``server``: ``llava-cot serve`` started as its own process (as it is deployed) on 127.0.0.1,
  asked by ``openai.AsyncOpenAI`` from this process, ``c`` requests at a time: the picture
  travels base64 in JSON, the search record comes back in every reply.

Each side loads the model once and runs one torch thread. For each concurrency (default 1 and
16) the two run interleaved ``--repeats`` times (direct, server, direct, ...) and the medians of
answers per second are compared: ``server / direct`` is the server's throughput as a fraction of
direct calls'. On a machine shared with other work, wall time measures the scheduler as much as
the server, so each run also counts the CPU seconds it cost (Linux: this process, plus the
server's process for the server side): ``server CPU / direct CPU`` is the server's overhead in
work done, whatever share of the CPU each run got.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

SERVED = "llava-cot-demo"


def questions(count: int) -> list:
    from langchain_llava_cot.demo.dataset import examples

    return examples("test", count, start=1_000)


def openai_messages(example: Any) -> list[dict]:
    url = "data:image/png;base64," + base64.b64encode(example.image_bytes).decode()
    content = [{"type": "image_url", "image_url": {"url": url}}, {"type": "text", "text": example.question}]
    return [{"role": "user", "content": content}]


async def answer_all(ask: Callable[[Any], Awaitable[Any]], asked: list, concurrency: int) -> float:
    """Answer every question of ``asked``, ``concurrency`` at a time; returns the wall seconds."""
    pending = iter(asked)

    async def worker() -> None:
        for example in pending:
            await ask(example)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return time.perf_counter() - started


def start_server(args: argparse.Namespace, log: Path) -> tuple[subprocess.Popen, str]:
    """``llava-cot serve`` on a free port, one torch thread; returns the process and its /v1 URL."""
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    command = [
        sys.executable, "-m", "langchain_llava_cot.cli", "serve", "--port", str(port),
        "--log-level", "warning", "--strategy", args.strategy, "--candidates", str(args.candidates),
    ]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    with open(log, "wb") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 600
    while True:
        if process.poll() is not None:
            raise RuntimeError(
                f"llava-cot serve exited with {process.returncode}:\n{log.read_text()[-2000:]}"
            )
        try:
            if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                return process, f"{url}/v1"
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            process.kill()
            raise RuntimeError(f"llava-cot serve did not start in 600 s:\n{log.read_text()[-2000:]}")
        time.sleep(0.25)


def cpu_seconds(pid: int | None = None) -> float:
    """CPU seconds (user + system, all threads) used so far by this process, or by process ``pid``."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


async def measure(args: argparse.Namespace, url: str, server_pid: int) -> dict:
    """Answers per second of both sides at each concurrency, interleaved ``--repeats`` times."""
    import openai

    from langchain_llava_cot import ChatLlavaCoT

    llm = ChatLlavaCoT(strategy=args.strategy, candidates=args.candidates)
    llm.get_backend()
    client = openai.AsyncOpenAI(base_url=url, api_key="unused", max_retries=0, timeout=600)

    async def direct(example: Any) -> Any:
        return await llm.ainvoke([example.message()])

    async def server(example: Any) -> Any:
        return await client.chat.completions.create(model=SERVED, messages=openai_messages(example))

    sides = {"direct": direct, "server": server}
    asked = questions(max(args.requests, max(args.concurrency)))
    for ask in sides.values():  # warm both up: first calls load kernels and caches
        await answer_all(ask, asked[:2], 2)
    results: dict[str, Any] = {}
    for concurrency in args.concurrency:
        requests = max(args.requests, concurrency)
        seconds: dict[str, list[float]] = {side: [] for side in sides}
        cpu: dict[str, list[float]] = {side: [] for side in sides}
        for _ in range(args.repeats):
            for side, ask in sides.items():
                before = cpu_seconds() + cpu_seconds(server_pid)
                seconds[side].append(await answer_all(ask, asked[:requests], concurrency))
                cpu[side].append((cpu_seconds() + cpu_seconds(server_pid) - before) / requests)
        rates = {side: requests / statistics.median(runs) for side, runs in seconds.items()}
        cpu_per_answer = {side: statistics.median(runs) for side, runs in cpu.items()}
        results[str(concurrency)] = {
            "requests": requests,
            "wall_seconds": seconds,
            "answers_per_second": rates,
            "server_over_direct": rates["server"] / rates["direct"],
            "cpu_seconds_per_answer": cpu,
            "cpu_seconds_per_answer_median": cpu_per_answer,
            "server_cpu_over_direct": cpu_per_answer["server"] / cpu_per_answer["direct"],
        }
    await client.close()
    return results


def main(argv: list[str] | None = None) -> dict:
    """Measure, print a report, write JSON to ``--out``."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--strategy", default="stage_beam", help="the search both sides run")
    parser.add_argument("--candidates", type=int, default=4, help="candidates per step")
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16], help="requests in flight")
    parser.add_argument("--requests", type=int, default=8, help="requests per run (at least the concurrency)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved runs of each side (medians)")
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)

    import torch

    torch.set_flush_denormal(True)
    torch.set_num_threads(1)
    log = Path(tempfile.mkdtemp(prefix="serve-cost-")) / "serve.log"
    process, url = start_server(args, log)
    try:
        load_at_start = os.getloadavg()
        throughput = asyncio.run(measure(args, url, process.pid))
    finally:
        process.terminate()
        process.wait(timeout=30)
    results = {
        "machine": {
            "platform": platform.platform(),
            "python": sys.version.split()[0],
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "load_average_at_start": load_at_start,
            "load_average_at_end": os.getloadavg(),
        },
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "throughput": throughput,
    }
    print(report(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.out}")
    return results


def report(results: dict) -> str:
    """The human-readable summary."""
    m, s = results["machine"], results["settings"]
    lines = [
        f"machine: {m['platform']}, {m['cpu_count']} CPUs, torch {m['torch']} (one thread on each side)",
        "load average (1/5/15 min) at start "
        + "/".join(f"{x:.2f}" for x in m["load_average_at_start"])
        + ", at end "
        + "/".join(f"{x:.2f}" for x in m["load_average_at_end"]),
        f"search: {s['strategy']}, {s['candidates']} candidates, the bundled demo model; "
        f"{s['repeats']} interleaved repeats (medians)",
        "",
    ]
    for concurrency, entry in results["throughput"].items():
        rates = entry["answers_per_second"]
        lines.append(
            f"{concurrency:>3} concurrent, {entry['requests']} requests: "
            f"direct {rates['direct']:.2f} answers/s, server {rates['server']:.2f} answers/s, "
            f"server / direct = {entry['server_over_direct']:.2f}"
        )
        cpu = entry["cpu_seconds_per_answer_median"]
        lines.append(
            f"{'':>16}CPU seconds per answer: direct {cpu['direct']:.2f}, server {cpu['server']:.2f} "
            f"(its process and the client's), server / direct = {entry['server_cpu_over_direct']:.2f}"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
