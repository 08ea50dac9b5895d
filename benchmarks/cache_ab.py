"""What the transformers backend's prompt caches save: on and off, alternating, in one run.

Stage_beam requests run with a cache on and off in turn (the order swapped every
request, each picture asked once per mode); the median wall time of each mode is
printed, with the prompt tokens its calls asked for (every candidate row and judge
pair counted: what reading whole prompts reads) and those the prefix cache read and
reused. ``--cache`` picks what is switched:

- ``carry``: the winner's states carried into the next stage (``generate``'s KV
  states kept with their prompt, so the next stage reads only the tokens after the
  winner). Off: they are not kept.
- ``prefix``: the prefix KV cache as a whole. Off: ``share_prefill=False``, every
  prompt read whole for every row (nothing is counted as read or reused).

Each mode has its own backend (and caches) over one loaded model.

::

    python benchmarks/cache_ab.py --cache carry --requests 30 --out benchmarks/carry-ab.json
    python benchmarks/cache_ab.py --cache prefix --random mllama --out benchmarks/prefix-ab-random-mllama.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
sys.path.insert(0, str(Path(__file__).parent))


def _backends(cache: str, path: Path) -> dict[str, Any]:
    """One backend per mode, all over one loaded model, each with its own caches."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from langchain_llava_cot.backends.transformers import TransformersBackend

    model = AutoModelForImageTextToText.from_pretrained(path)
    processor = AutoProcessor.from_pretrained(path)
    on = TransformersBackend.from_loaded(model, processor)
    if cache == "prefix":
        return {
            "prefix cache": on,
            "whole prompts": TransformersBackend.from_loaded(model, processor, share_prefill=False),
        }
    no_carry = TransformersBackend.from_loaded(model, processor)
    no_carry._prefill.keep_written = lambda *_, **__: None  # type: ignore[method-assign]
    return {"carry": on, "no carry": no_carry}


def main(argv: list[str] | None = None) -> dict:
    import torch
    from search_cost import _messages, _resolve_model

    from langchain_llava_cot import ChatLlavaCoT

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cache", choices=("carry", "prefix"), default="carry", help="what to switch")
    parser.add_argument("--model", help="model folder (default: the bundled demo model)")
    parser.add_argument("--random", choices=("llava", "mllama", "idefics3"), help="a random-weight model")
    parser.add_argument("--requests", type=int, default=30, help="requests per mode")
    parser.add_argument("--stage-tokens", type=int, default=32, help="token limit of every stage")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--out", type=Path, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    path, source = _resolve_model(args.model, args.random)
    modes = _backends(args.cache, path)
    models = {
        mode: ChatLlavaCoT(
            backend=backend, strategy="stage_beam", candidates=4, max_stage_tokens=args.stage_tokens, seed=0
        )
        for mode, backend in modes.items()
    }
    for model in models.values():  # warm up
        model.invoke(_messages(1))
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    asked_for, read, reused = dict.fromkeys(modes, 0), dict.fromkeys(modes, 0), dict.fromkeys(modes, 0)
    for index in range(args.requests):
        for mode in sorted(modes, reverse=bool(index % 2)):
            backend = modes[mode]
            before = (backend.prompt_tokens_read, backend.prompt_tokens_reused)
            started = time.perf_counter()
            message = models[mode].invoke(_messages(1000 + index))
            seconds[mode].append(time.perf_counter() - started)
            assert message.usage_metadata is not None  # ChatLlavaCoT always reports usage
            asked_for[mode] += message.usage_metadata["input_tokens"]
            read[mode] += backend.prompt_tokens_read - before[0]
            reused[mode] += backend.prompt_tokens_reused - before[1]
    results = {
        mode: {
            "median_seconds": statistics.median(seconds[mode]),
            "prompt_tokens_asked_for": asked_for[mode],
            "prompt_tokens_read": read[mode],
            "prompt_tokens_reused": reused[mode],
        }
        for mode in modes
    }
    first, second = (results[mode]["median_seconds"] for mode in modes)
    print(f"model: {path} ({source}); {args.requests} stage_beam requests per mode, N=4")
    for mode, entry in results.items():
        median, tokens = entry["median_seconds"], entry["prompt_tokens_read"]
        print(
            f"{mode:13s} median {median:.3f} s   prompt tokens asked for {asked_for[mode]:,}; "
            f"the prefix cache read {tokens:,}, reused {reused[mode]:,}"
        )
    print(f"{list(modes)[1]} / {list(modes)[0]} wall: {second / first:.2f}x")
    if args.out:
        settings = {"cache": args.cache, "model": source, "requests": args.requests, "threads": args.threads}
        args.out.write_text(json.dumps({**settings, **results}, indent=1) + "\n")
    return results


if __name__ == "__main__":
    main()
