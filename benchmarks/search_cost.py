"""What stage-level beam search costs, measured side by side in one run.

One command prints every figure of issue 6 and writes them as JSON::

    python benchmarks/search_cost.py --out results.json

Procedures, all on the same loaded model and the same fixed per-stage token limit
(random-weight models never close a tag, so every stage runs to the limit and greedy
and beam write comparable lengths):

- ``greedy``: ``ChatLlavaCoT(strategy="greedy")``, one candidate per stage, no judge;
- ``stage_beam``: ``ChatLlavaCoT(strategy="stage_beam", candidates=N)``, this
  project's engine: N candidates per stage in one ``generate`` call, the pairwise
  judge in ceil(log2 N) batched forward passes, image features cached, each prompt
  read once (the prefix KV cache carries from stage to stage and into the judge);
- ``adaptive``: the same stage_beam with ``adaptive=True``: 2 candidates first, the
  other N-2 only when those 2 differ;
- ``reference``: the official scripts' procedure rebuilt from the same backend's
  primitives at batch size 1, with no image cache and no prefix cache (every call
  reads its whole prompt): per stage, N candidates sampled
  one at a time, then a random knockout of N-1 sequential comparisons, each a
  *generated* verdict (up to ``--verdict-tokens`` tokens) that is parsed.

The four run interleaved (greedy, beam, adaptive, reference, greedy, ...) ``--repeats`` times,
and the medians are compared, so machine noise hits them alike. Each request gets its
own picture, so the vision-encoder count per request is not flattered by the cache.
Throughput runs ``c`` threads over one ``ChatLlavaCoT`` (stage_beam, unseeded so the
generation queue may merge them) for each concurrency ``c``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import random
import resource
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


def _messages(seed: int) -> list:
    """Held-out question ``seed`` (0-1999) of the demo dataset, each with its own picture."""
    return [_questions()[seed].message()]


@functools.cache
def _questions() -> list:
    from langchain_llava_cot.demo.dataset import examples

    return examples("test", 2_000)


def _resolve_model(option: str | None, random_arch: str | None) -> tuple[Path, str]:
    """The model folder to measure: ``--model``, ``--random ARCH``, else the demo model."""
    from langchain_llava_cot.demo import DEMO_MODEL_PATH

    if option:
        return Path(option), "given by --model"
    if random_arch is None and (DEMO_MODEL_PATH / "config.json").is_file():
        return DEMO_MODEL_PATH, "bundled demo model"
    from langchain_llava_cot.model_builders import build_tiny_vlm

    arch = random_arch or "llava"
    folder = Path(tempfile.mkdtemp(prefix="search-cost-")) / f"tiny-{arch}"
    build_tiny_vlm(
        folder, arch=arch, hidden_size=192, num_layers=4, num_heads=4, vision_hidden_size=64, seed=0
    )
    return folder, f"random-weight {arch} of about the demo model's size"


# -- the reference procedure ------------------------------------------------------


def reference_answer(
    backend: Any, conversation: Any, *, n: int, stage_tokens: int, verdict_tokens: int, seed: int
) -> dict:
    """The official scripts' stage beam at batch size 1: N single samples, N-1 generated verdicts."""
    from langchain_llava_cot.backends.base import SampleRequest
    from langchain_llava_cot.judges import JudgeTask, pairwise_prompt, parse_verdict
    from langchain_llava_cot.stages import STAGE_SEPARATOR, STAGES, cut_stage, render_answer

    rng = random.Random(seed)
    chosen: dict = {}
    calls = output_tokens = 0
    for stage in STAGES:
        earlier = render_answer(chosen)
        prefix = f"{earlier}{STAGE_SEPARATOR}{stage.open_tag}" if earlier else stage.open_tag
        request = SampleRequest(
            conversation,
            prefix=prefix,
            n=1,
            stop=(stage.close_tag,),
            max_new_tokens=stage_tokens,
            temperature=0.6,
            top_p=0.9,
        )
        candidates = []
        for _ in range(n):
            [[sample]] = backend.sample([request])
            candidates.append(cut_stage(stage, sample.text)[0])
            calls, output_tokens = calls + 1, output_tokens + sample.completion_tokens
        task = JudgeTask(
            conversation=conversation, stage=stage, chosen=dict(chosen), candidates=tuple(candidates)
        )
        alive = list(range(n))
        while len(alive) > 1:
            a, b = rng.sample(alive, 2)
            verdict = SampleRequest(pairwise_prompt(task, a, b), prefix="", max_new_tokens=verdict_tokens)
            [[written]] = backend.sample([verdict])
            calls, output_tokens = calls + 1, output_tokens + written.completion_tokens
            alive.remove(b if parse_verdict(written.text) in (1, None) else a)
        chosen[stage] = candidates[alive[0]]
    return {"calls": calls, "output_tokens": output_tokens}


# -- measurements -----------------------------------------------------------------


def _timed(function: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


def _usage(message: Any) -> dict:
    usage = message.response_metadata["llava_cot"].get("usage") or {}
    return {"output_tokens": message.usage_metadata["output_tokens"], "model_calls": usage.get("model_calls")}


def side_by_side(args: argparse.Namespace, backend: Any, reference_backend: Any) -> dict:
    """Greedy, stage_beam and reference, interleaved; medians and ratios."""
    from langchain_llava_cot import ChatLlavaCoT
    from langchain_llava_cot.messages import convert_messages

    greedy = ChatLlavaCoT(backend=backend, strategy="greedy", max_stage_tokens=args.stage_tokens)
    beam = ChatLlavaCoT(
        backend=backend,
        strategy="stage_beam",
        candidates=args.candidates,
        max_stage_tokens=args.stage_tokens,
        seed=0,
    )
    adaptive = beam.model_copy(update={"adaptive": True})
    greedy.invoke(_messages(1_998))  # warm-up: first-call allocations, lazy imports
    beam.invoke(_messages(1_999))
    models = {"greedy": greedy, "stage_beam": beam, "adaptive": adaptive}
    walls: dict[str, list[float]] = {"greedy": [], "stage_beam": [], "adaptive": [], "reference": []}
    generated: dict[str, list[int]] = {name: [] for name in walls}
    details: dict[str, Any] = {}
    vision_calls = dict.fromkeys(walls, 0)
    processor_runs = dict.fromkeys(models, 0)  # the reference's backend remembers nothing to count
    for repeat in range(args.repeats):
        for name in walls:
            messages = _messages(repeat * 10 + len(walls[name]) + 100 * list(walls).index(name))
            # Both backends wrap one model, so this hook counts every vision-tower call.
            before = backend.vision_encoder_calls
            runs_before = backend.image_processor_runs or 0
            if name == "reference":
                conversation = convert_messages(messages)
                seconds, details[name] = _timed(
                    lambda c=conversation: reference_answer(
                        reference_backend,
                        c,
                        n=args.candidates,
                        stage_tokens=args.stage_tokens,
                        verdict_tokens=args.verdict_tokens,
                        seed=repeat,
                    )
                )
            else:
                seconds, message = _timed(lambda m=models[name], msgs=messages: m.invoke(msgs))
                details[name] = _usage(message)
            generated[name].append(details[name]["output_tokens"])
            vision_calls[name] += backend.vision_encoder_calls - before
            if name in processor_runs:
                processor_runs[name] += (backend.image_processor_runs or 0) - runs_before
            walls[name].append(seconds)
    median = {name: statistics.median(values) for name, values in walls.items()}
    return {
        "wall_seconds_median": median,
        "wall_seconds_all": walls,
        "generated_tokens_mean": {name: statistics.mean(values) for name, values in generated.items()},
        "last_run": details,
        "vision_encoder_calls_per_request": {k: v / args.repeats for k, v in vision_calls.items()},
        "image_processor_runs_per_request": {k: v / args.repeats for k, v in processor_runs.items()},
        "stage_beam_over_greedy": median["stage_beam"] / median["greedy"],
        "adaptive_over_greedy": median["adaptive"] / median["greedy"],
        "reference_over_stage_beam": median["reference"] / median["stage_beam"],
    }


def throughput(args: argparse.Namespace, backend: Any) -> dict:
    """Answers per second with ``c`` threads sharing one ChatLlavaCoT (stage_beam)."""
    from langchain_llava_cot import ChatLlavaCoT

    llm = ChatLlavaCoT(
        backend=backend, strategy="stage_beam", candidates=args.candidates, max_stage_tokens=args.stage_tokens
    )
    results = {}
    for concurrency in args.concurrency:
        requests = max(concurrency, args.min_requests)
        batches_before, generate_before = backend._queue.batches, backend.generate_calls
        seconds, _ = _timed(lambda c=concurrency, r=requests: _run_threads(llm, c, r))
        results[str(concurrency)] = {
            "requests": requests,
            "wall_seconds": seconds,
            "answers_per_second": requests / seconds,
            "generate_calls": backend.generate_calls - generate_before,
            "queue_batches": backend._queue.batches - batches_before,
        }
    one = results[str(args.concurrency[0])]["answers_per_second"]
    for entry in results.values():
        entry["speedup_over_first"] = entry["answers_per_second"] / one
    return results


def _run_threads(llm: Any, concurrency: int, requests: int) -> None:
    """``requests`` invocations spread over ``concurrency`` threads; errors re-raised."""
    errors: list[BaseException] = []
    counter = iter(range(requests))
    lock = threading.Lock()

    def worker() -> None:
        while True:
            with lock:
                index = next(counter, None)
            if index is None:
                return
            try:
                llm.invoke(_messages(1_000 + index))
            except BaseException as error:  # noqa: BLE001 - re-raised below
                errors.append(error)
                return

    threads = [threading.Thread(target=worker) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]


def machine() -> dict:
    import torch
    import transformers

    return {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "cuda": torch.cuda.is_available(),
        "load_average_at_start": os.getloadavg(),
    }


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main(argv: list[str] | None = None) -> dict:
    """Run every measurement, print a report, write JSON to ``--out``."""
    from langchain_llava_cot.model_builders import ARCHITECTURES

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", help="model folder (default: the bundled demo model)")
    parser.add_argument(
        "--random",
        choices=ARCHITECTURES,
        help="measure a random-weight model of this architecture, built on the spot, instead",
    )
    parser.add_argument("--candidates", type=int, default=4, help="N, candidates per stage")
    parser.add_argument("--stage-tokens", type=int, default=32, help="token limit of every stage")
    parser.add_argument(
        "--verdict-tokens", type=int, default=32, help="token limit of a generated verdict (reference)"
    )
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats of greedy/beam/reference")
    parser.add_argument(
        "--concurrency", type=int, nargs="+", default=[1, 4, 16], help="thread counts for throughput"
    )
    parser.add_argument("--min-requests", type=int, default=2, help="fewest requests per throughput run")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch CPU threads (1 avoids spin-waiting on a shared machine)"
    )
    parser.add_argument("--out", type=Path, help="write the results here as JSON")
    args = parser.parse_args(argv)

    import torch

    torch.set_flush_denormal(True)
    torch.set_num_threads(args.threads)
    from langchain_llava_cot.backends.transformers import TransformersBackend

    path, source = _resolve_model(args.model, args.random)
    rss_before_load = _peak_rss_mib()
    backend = TransformersBackend(path)
    reference_backend = TransformersBackend.from_loaded(
        backend._model,
        backend._prompts.processor,
        model_name="reference",
        batch_window=0.0,
        max_cached_images=0,
        share_prefill=False,
    )
    parameters = sum(p.numel() for p in backend._model.parameters())
    rss_loaded = _peak_rss_mib()
    results: dict[str, Any] = {
        "machine": machine(),
        "model": {"path": str(path), "source": source, "parameters": parameters},
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    results["side_by_side"] = side_by_side(args, backend, reference_backend)
    results["throughput"] = throughput(args, backend)
    results["memory"] = {
        "peak_rss_mib": _peak_rss_mib(),
        "peak_rss_mib_after_load": rss_loaded,
        "peak_rss_mib_before_load": rss_before_load,
        "cached_images": backend.cached_images,
    }
    results["machine"]["load_average_at_end"] = os.getloadavg()
    results["prefix_cache"] = {
        "prompt_tokens_read": backend.prompt_tokens_read,
        "prompt_tokens_reused": backend.prompt_tokens_reused,
        "prefill_calls": backend.prefill_calls,
    }
    reference_backend.close()
    backend.close()
    print(report(results))
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))
        print(f"\nwrote {args.out}")
    return results


def report(results: dict) -> str:
    """The human-readable summary."""
    m, model, side = results["machine"], results["model"], results["side_by_side"]
    s = results["settings"]
    wall = side["wall_seconds_median"]
    lines = [
        f"machine: {m['platform']}, {m['cpu_count']} CPUs (torch threads {m['torch_threads']}), "
        f"torch {m['torch']}, transformers {m['transformers']}, cuda={m['cuda']}",
        "load average (1/5/15 min) at start "
        + "/".join(f"{x:.2f}" for x in m["load_average_at_start"])
        + ", at end "
        + "/".join(f"{x:.2f}" for x in m["load_average_at_end"]),
        f"model: {model['path']} ({model['source']}, {model['parameters']:,} parameters)",
        f"settings: N={s['candidates']}, {s['stage_tokens']} tokens per stage, "
        f"{s['verdict_tokens']}-token reference verdicts, {s['repeats']} interleaved repeats (medians)",
        "",
        f"greedy      {wall['greedy']:.3f} s   {side['last_run']['greedy']}",
        f"stage_beam  {wall['stage_beam']:.3f} s   {side['last_run']['stage_beam']}",
        f"adaptive    {wall['adaptive']:.3f} s   {side['last_run']['adaptive']}",
        f"reference   {wall['reference']:.3f} s   {side['last_run']['reference']}",
        f"stage_beam / greedy wall:     {side['stage_beam_over_greedy']:.2f}x   (target <= 1.5x)",
        f"adaptive / greedy wall:       {side['adaptive_over_greedy']:.2f}x   (target <= 1.2x)",
        "generated tokens per request (mean): "
        + ", ".join(f"{k} {v:.0f}" for k, v in side["generated_tokens_mean"].items()),
        f"reference / stage_beam wall:  {side['reference_over_stage_beam']:.2f}x   (target >= 4x)",
        "vision-encoder calls per request: "
        + ", ".join(f"{k} {v:g}" for k, v in side["vision_encoder_calls_per_request"].items())
        + "   (target 1)",
        "image-processor runs per request: "
        + ", ".join(f"{k} {v:g}" for k, v in side["image_processor_runs_per_request"].items()),
        "",
        "throughput (stage_beam, threads over one ChatLlavaCoT):",
    ]
    for concurrency, entry in results["throughput"].items():
        lines.append(
            f"  {concurrency:>3} concurrent: {entry['requests']} requests in {entry['wall_seconds']:.2f} s = "
            f"{entry['answers_per_second']:.2f} answers/s ({entry['speedup_over_first']:.2f}x), "
            f"{entry['generate_calls']} generate calls in {entry['queue_batches']} queue batches"
        )
    cache = results["prefix_cache"]
    lines.append(
        f"prefix KV cache (whole run): {cache['prompt_tokens_reused']:,} prompt tokens reused, "
        f"{cache['prompt_tokens_read']:,} read in {cache['prefill_calls']} prefill calls"
    )
    mem = results["memory"]
    lines.append(
        f"peak RSS: {mem['peak_rss_mib']:.0f} MiB "
        f"(after loading the model {mem['peak_rss_mib_after_load']:.0f} MiB, "
        f"before {mem['peak_rss_mib_before_load']:.0f} MiB)"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
