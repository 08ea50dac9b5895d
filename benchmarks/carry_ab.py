"""What carrying the winner's states into the next stage saves: on and off, alternating, in one run.

``TransformersBackend`` keeps the KV states ``generate`` wrote for each candidate, so
the next stage's prompt (the winner's text, then the next tag) reads only the tokens
after the winner. This runs stage_beam requests with that on and off in turn (the
order swapped every request, each picture asked once per mode) and prints the
median wall time and the prompt tokens read of each::

    python benchmarks/carry_ab.py --requests 30 --out benchmarks/carry-ab.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).parent))


def main(argv: list[str] | None = None) -> dict:
    import torch
    from search_cost import _messages

    from langchain_llava_cot import ChatLlavaCoT
    from langchain_llava_cot.backends.transformers import TransformersBackend
    from langchain_llava_cot.demo import DEMO_MODEL_PATH

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=30, help="requests per mode")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    backend = TransformersBackend(DEMO_MODEL_PATH)
    keep = backend._keep_continuations
    modes = {"carry": keep, "no carry": lambda *_, **__: None}
    llm = ChatLlavaCoT(backend=backend, strategy="stage_beam", candidates=4, max_stage_tokens=32, seed=0)
    llm.invoke(_messages(1))  # warm up
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    read = dict.fromkeys(modes, 0)
    for index in range(args.requests):
        for mode in sorted(modes, reverse=bool(index % 2)):
            backend._keep_continuations = modes[mode]  # type: ignore[method-assign]
            before, started = backend.prompt_tokens_read, time.perf_counter()
            llm.invoke(_messages(1000 + index))
            seconds[mode].append(time.perf_counter() - started)
            read[mode] += backend.prompt_tokens_read - before
    results = {
        mode: {"median_seconds": statistics.median(seconds[mode]), "prompt_tokens_read": read[mode]}
        for mode in modes
    }
    for mode, entry in results.items():
        median, tokens = entry["median_seconds"], entry["prompt_tokens_read"]
        print(f"{mode:9s} median {median:.3f} s   prompt tokens read {tokens:,}")
    if args.out:
        args.out.write_text(
            json.dumps({"requests": args.requests, "threads": args.threads, **results}, indent=1) + "\n"
        )
    return results


if __name__ == "__main__":
    main()
