"""Running an eval: each strategy answers the held-out questions, and ``llava-cot eval``.

Every strategy shares one backend (the model is loaded once), or each of ``workers``
processes loads its own; each question is asked with ``invoke``, its search record is
scored (:func:`~langchain_llava_cot.eval.oracle.score_record`) and the scores of each
strategy are summed up into a :class:`~langchain_llava_cot.eval.report.StrategyResult`.

>>> report = run_eval(questions=500, strategies=["greedy", "stage_beam:pairwise:4"])  # doctest: +SKIP
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from langchain_llava_cot.demo.dataset import Example, examples
from langchain_llava_cot.eval.oracle import score_record
from langchain_llava_cot.eval.report import EvalReport, StrategyResult, plot
from langchain_llava_cot.eval.stats import paired_difference, wilson_interval
from langchain_llava_cot.eval.strategies import (
    GRID_STRATEGIES,
    StrategySpec,
    default_strategies,
    parse_strategy,
)
from langchain_llava_cot.options import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, model_or_demo

__all__ = ["main", "run_eval"]


def _summarize(spec: StrategySpec, records: list[dict[str, Any]]) -> StrategyResult:
    n = len(records)
    result = StrategyResult(
        spec.name, spec.strategy, spec.candidates, spec.judge, questions=n, records=records
    )
    if not n:
        return result
    result.accuracy = sum(r["correct"] for r in records) / n
    result.accuracy_interval = wilson_interval(sum(r["correct"] for r in records), n)
    result.well_formed = sum(r["well_formed"] for r in records) / n
    result.pass_at_n = sum(r["pass"] for r in records) / n
    result.tokens_per_question = statistics.mean(r["input_tokens"] + r["output_tokens"] for r in records)
    result.generated_per_question = statistics.mean(r["output_tokens"] for r in records)
    result.seconds_per_question = statistics.mean(r["seconds"] for r in records)
    result.caption_right = sum(r["caption_right"] for r in records) / n
    result.follows_caption = sum(r["follows_caption"] for r in records) / n
    kinds: dict[str, list[bool]] = {}
    for r in records:
        kinds.setdefault(r["kind"], []).append(r["correct"])
    result.by_kind = {k: sum(v) / len(v) for k, v in sorted(kinds.items())}
    decisions = [d for r in records for d in r["decisions"]]
    if spec.strategy != "greedy" and decisions:
        result.judge_decisions = len(decisions)
        result.judge_agreement = sum(ok for _, ok in decisions) / len(decisions)
        stages: dict[str, list[bool]] = {}
        for stage, ok in decisions:
            stages.setdefault(stage, []).append(ok)
        result.agreement_by_stage = {k: sum(v) / len(v) for k, v in stages.items()}
    return result


def run_eval(
    model: str | Path | None = None,
    *,
    strategies: Iterable[str | StrategySpec] | None = None,
    questions: int = 100,
    split: str = "test",
    start: int = 0,
    temperature: float = DEFAULT_TEMPERATURE,
    top_p: float | None = DEFAULT_TOP_P,
    seed: int = 0,
    output_dir: str | Path | None = "eval-results",
    progress: bool = True,
    backend: Any = None,
    keep_records: bool = True,
    max_stage_tokens: int | None = None,
    workers: int = 1,
) -> EvalReport:
    """Run each strategy on ``questions`` held-out questions and write the results.

    Args:
        model: Model folder; None uses the bundled demo model.
        strategies: ``greedy`` or ``STRATEGY:JUDGE:N`` strings, or :class:`StrategySpec`;
            None runs the quick set (:func:`default_strategies`).
        questions: How many questions of ``split`` to ask, from index ``start``.
        split: ``test`` (default) or ``validation``.
        start: Index of the first question.
        temperature: Sampling temperature of candidates (greedy always uses 0).
        top_p: Nucleus sampling of candidates.
        seed: Base seed; question ``i`` uses ``seed + i``, so runs repeat exactly.
        output_dir: Where ``eval.json`` and ``eval.png`` go; None writes nothing.
        progress: Show a progress bar.
        backend: A ready ``VLMBackend`` to use instead of loading ``model`` (one worker only).
        keep_records: Keep every question's scores in the JSON.
        max_stage_tokens: Token limit of each stage (None: the engine's defaults).
        workers: Processes that answer questions in parallel, each loading the model
            with one torch thread (on small CPU models 2 workers on 2 cores beat one
            worker with 2 threads: decoding is dominated by per-call overhead).

    Returns:
        The report; ``report.table()`` renders the table.
    """
    if strategies is None:
        strategies = default_strategies()
    specs = [s if isinstance(s, StrategySpec) else parse_strategy(s) for s in strategies]
    if not specs:
        msg = "No strategies to run; pass e.g. strategies=['greedy', 'stage_beam:pairwise:4']."
        raise ValueError(msg)
    if split not in ("test", "validation"):
        msg = f"Evaluate on 'test' or 'validation', not {split!r}: the model was trained on 'train'."
        raise ValueError(msg)
    if workers > 1 and backend is not None:
        msg = "A ready backend cannot be shared by worker processes; pass model= with workers > 1."
        raise ValueError(msg)
    model = model_or_demo(model)
    options = {"temperature": temperature, "top_p": top_p, "seed": seed, "max_stage_tokens": max_stage_tokens}
    items = examples(split, questions, start=start)  # type: ignore[arg-type]
    bar = _progress(len(specs) * len(items), progress)
    results = []
    pool = None
    if workers > 1:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(str(model),),
        )
    elif backend is None:
        from langchain_llava_cot.backends.transformers import TransformersBackend

        backend = TransformersBackend(str(model))
    try:
        for spec in specs:
            bar.set_description(spec.name)
            if pool is not None:
                futures = [pool.submit(_worker_ask, spec, example, options) for example in items]
                records = []
                for future in futures:
                    records.append(future.result())
                    bar.update(1)
            else:
                records = []
                for example in items:
                    records.append(_ask(backend, spec, example, options))
                    bar.update(1)
            results.append(_summarize(spec, records))
            if output_dir is not None:  # a run cut short keeps what it measured, compared
                _compare_pairs(results)
                _write_json(Path(output_dir), results, split, len(items), str(model), keep_records)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    _compare_pairs(results)
    report = EvalReport(results, split, len(items), str(model))
    if output_dir is not None:
        out = Path(output_dir)
        report.json_path = _write_json(out, results, split, len(items), str(model), keep_records)
        report.plot_path = plot(report, out / "eval.png")
    return report


def _compare_pairs(results: Sequence[StrategyResult]) -> None:
    """Set each search's paired accuracy differences: from greedy, and from its fewest N."""
    greedy = next((r for r in results if r.strategy == "greedy"), None)
    searches = [r for r in results if r.strategy != "greedy" and r.records]
    for result in searches:
        if greedy is not None and len(greedy.records) == len(result.records):
            result.vs_greedy = paired_difference(_correct(result), _correct(greedy))
        fewest = min((r for r in searches if r.family == result.family), key=lambda r: r.candidates)
        if fewest.candidates < result.candidates and len(fewest.records) == len(result.records):
            diff, low, high = paired_difference(_correct(result), _correct(fewest))
            result.vs_fewer = (fewest.candidates, diff, low, high)


def _correct(result: StrategyResult) -> list[bool]:
    return [r["correct"] for r in result.records]


_WORKER: dict[str, Any] = {}


def _init_worker(model: str) -> None:
    import torch

    from langchain_llava_cot.backends.transformers import TransformersBackend

    torch.set_num_threads(1)
    _WORKER["backend"] = TransformersBackend(model)


def _worker_ask(spec: StrategySpec, example: Example, options: dict[str, Any]) -> dict[str, Any]:
    return _ask(_WORKER["backend"], spec, example, options)


def _ask(backend: Any, spec: StrategySpec, example: Example, options: dict[str, Any]) -> dict[str, Any]:
    """Answer one question with one strategy and score it."""
    from langchain_llava_cot.chat_models import ChatLlavaCoT

    llm = ChatLlavaCoT(
        backend=backend,
        strategy=spec.strategy,  # type: ignore[arg-type]
        candidates=spec.candidates,
        adaptive=spec.adaptive,
        judge=spec.judge or "pairwise",
        temperature=options["temperature"],
        top_p=options["top_p"],
        max_stage_tokens=options["max_stage_tokens"],
    )
    seed = options["seed"] + example.index
    random.seed(seed)
    started = time.perf_counter()
    message = llm.invoke([example.message()], seed=seed)
    seconds = time.perf_counter() - started
    record = message.response_metadata["llava_cot"]
    usage: Mapping[str, Any] = message.usage_metadata or {}
    scored = score_record(example, str(message.content), record)
    scored.update(
        index=example.index,
        kind=example.kind,
        question=example.question,
        answer=example.answer,
        conclusion=str(message.content),
        chosen=record.get("chosen"),
        input_tokens=usage.get("input_tokens", 0),
        output_tokens=usage.get("output_tokens", 0),
        seconds=seconds,
    )
    return scored


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled, unit="q", dynamic_ncols=True)


def _write_json(
    out: Path, results: Sequence[StrategyResult], split: str, questions: int, model: str, keep: bool
) -> Path:
    out.mkdir(parents=True, exist_ok=True)
    path = out / "eval.json"
    payload = {
        "split": split,
        "questions": questions,
        "model": model,
        "results": [{k: v for k, v in asdict(r).items() if keep or k != "records"} for r in results],
    }
    path.write_text(json.dumps(payload, indent=1, default=str))
    return path


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m langchain_llava_cot.eval``: run, print the table, write JSON and PNG."""
    parser = argparse.ArgumentParser(description="Measure search strategies on held-out demo questions.")
    parser.add_argument("--model", help="model folder (default: the bundled demo model)")
    parser.add_argument("--questions", type=int, default=100, help="held-out questions to ask (default 100)")
    parser.add_argument("--start", type=int, default=0, help="index of the first question (default 0)")
    parser.add_argument("--split", default="test", choices=["test", "validation"], help="(default test)")
    which = parser.add_mutually_exclusive_group()
    which.add_argument(
        "--strategies",
        default=None,
        help="comma-separated: greedy, best_of_n:verifier:4, stage_beam:likelihood:8, ... "
        f"(default: {','.join(default_strategies())})",
    )
    which.add_argument(
        "--grid", action="store_true", help=f"the full grid: {len(GRID_STRATEGIES)} strategies (slow)"
    )
    parser.add_argument(
        "--temperature", type=float, default=DEFAULT_TEMPERATURE, help=f"(default {DEFAULT_TEMPERATURE})"
    )
    parser.add_argument("--seed", type=int, default=0, help="(default 0)")
    parser.add_argument(
        "--out", default="eval-results", help="folder for eval.json and eval.png (default eval-results)"
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="parallel processes, one torch thread each (default 1)"
    )
    parser.add_argument(
        "--max-stage-tokens", type=int, default=None, help="(default: the engine's per-stage limits)"
    )
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    report = run_eval(
        args.model,
        strategies=GRID_STRATEGIES
        if args.grid
        else None
        if args.strategies is None
        else [s.strip() for s in args.strategies.split(",") if s.strip()],
        questions=args.questions,
        start=args.start,
        split=args.split,
        temperature=args.temperature,
        seed=args.seed,
        output_dir=args.out,
        progress=not args.no_progress,
        workers=args.workers,
        max_stage_tokens=args.max_stage_tokens,
    )
    from rich.console import Console

    console = Console()
    if console.width < 120:  # not a wide terminal (a pipe, a CI log): do not cut the columns
        console = Console(width=120)
    console.print(report.table())
    if report.scaling():
        console.print("More candidates, same search and judge (paired):\n  " + "\n  ".join(report.scaling()))
    console.print(f"JSON: {report.json_path}\nplot: {report.plot_path}")
    return 0
