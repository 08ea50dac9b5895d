"""Running an eval: each strategy answers every question, resumably and concurrently.

The questions are the demo's held-out ones (:func:`~langchain_llava_cot.demo.dataset.examples`) or
a benchmark file's (:func:`~langchain_llava_cot.eval.data.load_questions`). Every strategy shares one
backend (in-process, a served model, or any ready backend or LangChain chat model); ``concurrency``
questions are in flight at once (``ainvoke`` under a semaphore: requests to a server overlap, and the
in-process engine merges concurrent requests into shared ``generate`` calls), or each of ``workers``
processes loads its own copy of an in-process model. Each answer is scored
(:mod:`~langchain_llava_cot.eval.scorers`) and appended at once to ``answers.jsonl``
(:class:`~langchain_llava_cot.eval.answers.AnswerLog`), so the same call with the same ``output_dir``
asks only what is not there yet. The answers of each strategy are summed up into a
:class:`~langchain_llava_cot.eval.report.StrategyResult`.

>>> report = run_eval(questions=500, strategies=["greedy", "stage_beam:pairwise:4"])  # doctest: +SKIP
>>> report = run_eval(data="MMStar.tsv", base_url="http://127.0.0.1:8000/v1", concurrency=8)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import json
import random
import statistics
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from langchain_llava_cot.eval.answers import ANSWERS_FILE, AnswerLog
from langchain_llava_cot.eval.report import EvalReport, StrategyResult, plot
from langchain_llava_cot.eval.scorers import DemoScorer, FileScorer
from langchain_llava_cot.eval.scoring import DEFAULT_TOLERANCE
from langchain_llava_cot.eval.stats import paired_difference, wilson_interval
from langchain_llava_cot.eval.strategies import StrategySpec, default_strategies, parse_strategy
from langchain_llava_cot.options import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, model_or_demo

__all__ = ["RUN_FILE", "check_output_dir", "run_eval"]

RUN_FILE = "run.json"
"""What a run measured (data, model, sampling): a rerun into the same folder must match it."""


@dataclass(frozen=True)
class _Raw:
    """One answer as the model gave it, before scoring."""

    content: str
    record: dict[str, Any]
    usage: dict[str, Any]
    seconds: float


def run_eval(
    model: str | Path | None = None,
    *,
    data: str | Path | None = None,
    columns: Mapping[str, str] | None = None,
    strategies: Iterable[str | StrategySpec] | None = None,
    questions: int | None = 100,
    split: str = "test",
    start: int = 0,
    shuffle: int | None = None,
    temperature: float = DEFAULT_TEMPERATURE,
    top_p: float | None = DEFAULT_TOP_P,
    seed: int = 0,
    output_dir: str | Path | None = "eval-results",
    progress: bool = True,
    backend: Any = None,
    base_url: str | None = None,
    served_model: str | None = None,
    api_key: str | None = None,
    grader: Any = None,
    tolerance: float = DEFAULT_TOLERANCE,
    concurrency: int = 1,
    keep_records: bool = True,
    max_stage_tokens: int | None = None,
    workers: int = 1,
    on_skip: Callable[[str], None] | None = None,
) -> EvalReport:
    """Run each strategy on the questions and write the results; resume what ``output_dir`` holds.

    Args:
        model: Model folder for in-process answers; None uses the bundled demo model.
        data: A benchmark file or folder (VLMEvalKit TSV, JSONL/JSON, Parquet, a ``save_to_disk``
            folder); None asks the demo's held-out questions.
        columns: Which column holds each field (``{"question": "query"}``) where the usual names fail.
        strategies: ``greedy`` or ``STRATEGY:JUDGE:N`` strings, or :class:`StrategySpec`;
            None runs the quick set (:func:`default_strategies`).
        questions: How many questions to ask: the first of the file (after ``shuffle``), or of the
            demo's ``split`` from index ``start``; None asks a file's every question.
        split: The demo's ``test`` (default) or ``validation`` split.
        start: The demo's index of the first question.
        shuffle: Shuffle a file's questions with this seed before taking the first ``questions``.
        temperature: Sampling temperature of candidates (greedy always uses 0).
        top_p: Nucleus sampling of candidates.
        seed: Base seed; a question at position ``i`` uses ``seed + i``, so runs repeat.
        output_dir: Where ``answers.jsonl``, ``eval.json`` and ``eval.png`` go; None writes nothing.
        progress: Show a progress bar with the running accuracy and an ETA.
        backend: A ready ``VLMBackend`` or LangChain chat model to answer with (one worker only).
        base_url: An OpenAI-compatible server to answer with.
        served_model: The served model's name (None: the one the server lists).
        api_key: The server's API key.
        grader: A :class:`~langchain_llava_cot.eval.grading.Grader` (or a LangChain chat model) that
            scores open answers of a file 0-1; None scores them by exact match.
        tolerance: Numbers match within this share of the expected one.
        concurrency: Questions in flight at once.
        keep_records: Keep every question's scores in ``eval.json``.
        max_stage_tokens: Token limit of each stage (None: the engine's defaults).
        workers: Processes that answer in parallel, each loading the in-process model with one torch
            thread (on small CPU models 2 workers on 2 cores beat one with 2 threads).
        on_skip: Called with one line per row of ``data`` that was skipped (an undecodable picture...).

    Returns:
        The report; ``report.table()`` renders the table.
    """
    specs = _check_options(strategies, questions, split, concurrency, workers, backend, base_url, model)
    out = check_output_dir(output_dir)
    items, source = _questions(data, columns, questions, shuffle, split, start, on_skip)
    scorer = DemoScorer() if data is None else FileScorer(tolerance, _grader(grader))
    settings = {
        "data": source,
        "model": _model_label(model, backend, base_url, served_model),
        "split": split if data is None else None,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
        "max_stage_tokens": max_stage_tokens,
    }
    if out is not None:
        _check_same_run(out, settings)
    log = AnswerLog(out / ANSWERS_FILE if out is not None else None)
    kept = sum(log.has(spec.name, item.index) for spec in specs for item in items)
    options = {"temperature": temperature, "top_p": top_p, "seed": seed, "max_stage_tokens": max_stage_tokens}
    answerer = _Answerer(model, backend, base_url, served_model, api_key, workers, concurrency)
    if base_url is not None and kept < len(specs) * len(items):
        answerer.ready_backend()  # a dead server or a wrong model name: one error now, not per question
    bar = _progress(len(specs) * len(items) - kept, progress)
    results: list[StrategyResult] = []
    model_name = str(settings["model"])
    try:
        for spec in specs:
            todo = [item for item in items if not log.has(spec.name, item.index)]
            if todo:
                bar.set_description(spec.name)
                asyncio.run(_answer_all(answerer, spec, todo, options, scorer, log, bar))
            records = [log.get(spec.name, item.index) for item in items]
            results.append(_summarize(spec, records))
            if out is not None:  # a run cut short keeps what it measured, compared
                _compare_pairs(results)
                _write_json(out, _payload(results, settings, len(items), model_name, keep_records))
    finally:
        bar.close()
        log.close()
        answerer.close()
    _compare_pairs(results)
    report = EvalReport(
        results, split if data is None else "file", len(items), str(model_name), source=source,
        demo=data is None, kept=kept, dropped=log.dropped,
    )  # fmt: skip
    if out is not None:
        report.json_path = _write_json(out, _payload(results, settings, len(items), model_name, keep_records))
        report.plot_path = plot(report, out / "eval.png")
    return report


def check_output_dir(output_dir: str | Path | None) -> Path | None:
    """The output folder, made if missing; refused at once when it is a file or cannot be made."""
    if output_dir is None:
        return None
    out = Path(output_dir).expanduser()
    if out.exists() and not out.is_dir():
        msg = f"--out {str(out)!r} is a file; name a folder for answers.jsonl, eval.json and eval.png."
        raise NotADirectoryError(msg)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        msg = f"Cannot make the output folder {str(out)!r}: {e.strerror or e}."
        raise ValueError(msg) from e
    return out


def _check_options(
    strategies: Iterable[str | StrategySpec] | None,
    questions: int | None,
    split: str,
    concurrency: int,
    workers: int,
    backend: Any,
    base_url: str | None,
    model: str | Path | None,
) -> list[StrategySpec]:
    if strategies is None:
        strategies = default_strategies()
    specs = [s if isinstance(s, StrategySpec) else parse_strategy(s) for s in strategies]
    if not specs:
        msg = "No strategies to run; pass e.g. strategies=['greedy', 'stage_beam:pairwise:4']."
        raise ValueError(msg)
    if len({s.name for s in specs}) < len(specs):
        msg = f"A strategy is named twice in {[s.name for s in specs]}; name each once."
        raise ValueError(msg)
    for name, value in (("questions", questions), ("concurrency", concurrency), ("workers", workers)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            msg = f"{name} must be a whole number of at least 1, got {value!r}."
            raise ValueError(msg)
    if split not in ("test", "validation"):
        msg = f"Evaluate on 'test' or 'validation', not {split!r}: the model was trained on 'train'."
        raise ValueError(msg)
    if sum(x is not None for x in (backend, base_url)) > 1 or (model is not None and (backend or base_url)):
        msg = "Answer with one of: model (in-process), base_url (a served model), or backend."
        raise ValueError(msg)
    if workers > 1 and (backend is not None or base_url is not None):
        msg = "Worker processes load an in-process model; with a server or a ready backend use concurrency."
        raise ValueError(msg)
    if model is not None:
        _local_model(model)
    return specs


def _questions(
    data: str | Path | None,
    columns: Mapping[str, str] | None,
    questions: int | None,
    shuffle: int | None,
    split: str,
    start: int,
    on_skip: Callable[[str], None] | None,
) -> tuple[list[Any], str]:
    """The questions to ask, and a description of where they come from."""
    if data is None:
        if shuffle is not None:
            msg = "shuffle applies to a data file; the demo's questions are drawn at random already."
            raise ValueError(msg)
        from langchain_llava_cot.demo.dataset import examples

        count = 100 if questions is None else questions
        return examples(split, count, start=start), f"demo {split} split"  # type: ignore[arg-type]
    from langchain_llava_cot.eval.data import load_questions

    dataset = load_questions(data, columns, questions=questions, shuffle=shuffle)
    for line in dataset.skipped:
        (on_skip or _warn)(f"{dataset.path}: skipped {line}")
    return dataset.questions, str(dataset.path)


def _warn(line: str) -> None:
    import logging

    logging.getLogger(__name__).warning(line)


def _grader(grader: Any) -> Any:
    if grader is None:
        return None
    from langchain_llava_cot.eval.grading import Grader

    return grader if isinstance(grader, Grader) else Grader(grader)


def _check_same_run(out: Path, settings: dict[str, Any]) -> None:
    """Refuse to mix two different runs' answers in one folder; remember this run's settings."""
    path = out / RUN_FILE
    if path.is_file():
        try:
            before = json.loads(path.read_text())
        except json.JSONDecodeError:
            before = None
        if isinstance(before, dict):
            differ = sorted(k for k in settings if k in before and before[k] != settings[k])
            if differ:
                what = ", ".join(f"{k} {before[k]!r} (now {settings[k]!r})" for k in differ)
                msg = (
                    f"{str(out)!r} holds answers of another run: {what}. Pass another --out, or the "
                    "same settings to resume it."
                )
                raise ValueError(msg)
    path.write_text(json.dumps(settings, indent=1))


class _Answerer:
    """Asks one question with one strategy: through a shared backend, or in worker processes."""

    def __init__(
        self,
        model: str | Path | None,
        backend: Any,
        base_url: str | None,
        served_model: str | None,
        api_key: str | None,
        workers: int,
        concurrency: int,
    ) -> None:
        self._model, self._backend, self._base_url = model, backend, base_url
        self._served_model, self._api_key = served_model, api_key
        self._workers, self._concurrency = workers, concurrency
        self._pool: Any = None

    def ready_backend(self) -> Any:
        """The shared backend, made (and the model loaded, or the server checked) at first use."""
        if self._backend is None:
            if self._base_url is not None:
                from langchain_llava_cot.eval.serving import served_backend

                self._backend = served_backend(
                    self._base_url,
                    self._served_model,
                    self._api_key,
                    max_concurrency=max(8, self._concurrency),
                )
            else:
                from langchain_llava_cot.backends.transformers import TransformersBackend

                self._backend = TransformersBackend(str(_local_model(model_or_demo(self._model))))
        return self._backend

    def _ready_pool(self) -> Any:
        if self._pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            model = str(_local_model(model_or_demo(self._model)))
            self._pool = ProcessPoolExecutor(
                self._workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=_init_worker,
                initargs=(model,),
            )
        return self._pool

    async def ask(self, spec: StrategySpec, item: Any, options: dict[str, Any]) -> _Raw:
        if self._workers > 1:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._ready_pool(), _worker_ask, spec, item, options)
        return await _aask(_chat_model(self.ready_backend(), spec, options), item, options)

    @property
    def in_flight(self) -> int:
        """Questions asked at once."""
        return self._workers if self._workers > 1 else self._concurrency

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


def _model_label(
    model: str | Path | None, backend: Any, base_url: str | None, served_model: str | None
) -> str:
    """What answered, as ``eval.json`` names it: a model folder, a served model, or a backend's model."""
    if backend is not None:
        return str(
            getattr(backend, "model_name", None) or getattr(backend, "model", None) or type(backend).__name__
        )
    if base_url is not None:
        return f"{served_model or 'the served model'} at {base_url}"
    return str(model_or_demo(model))


def _local_model(model: str | Path) -> Path:
    path = Path(model).expanduser()
    if not path.is_dir():
        msg = f"Model folder {str(path)!r} does not exist; pass a model folder, or --base-url for a server."
        raise FileNotFoundError(msg)
    return path


async def _answer_all(
    answerer: _Answerer,
    spec: StrategySpec,
    items: Sequence[Any],
    options: dict[str, Any],
    scorer: Any,
    log: AnswerLog,
    bar: Any,
) -> None:
    """Ask ``items`` with ``spec``, ``answerer.in_flight`` at a time; log each answer as it is scored."""
    gate = asyncio.Semaphore(answerer.in_flight)
    right: list[float] = [0.0, 0.0]

    async def one(item: Any) -> None:
        async with gate:
            try:
                raw = await answerer.ask(spec, item, options)
            except ValueError as e:  # this question cannot be asked (too long a prompt...): wrong, noted
                raw = _Raw("", {}, {}, 0.0)
                category = str(getattr(item, "category", getattr(item, "kind", "")))
                scored: dict[str, Any] = {
                    "correct": False, "readable": False, "well_formed": False, "pass": False,
                    "decisions": [], "category": category, "error": str(e),
                }  # fmt: skip
            else:
                scored = await scorer.score(item, raw.content, raw.record)
        log.append(_record(spec, item, raw, scored))
        right[0] += float(scored["correct"])
        right[1] += 1
        bar.set_postfix_str(f"accuracy {right[0] / right[1]:.1%}", refresh=False)
        bar.update(1)

    tasks = [asyncio.ensure_future(one(item)) for item in items]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


def _record(spec: StrategySpec, item: Any, raw: _Raw, scored: dict[str, Any]) -> dict[str, Any]:
    """The line ``answers.jsonl`` keeps for one question and strategy."""
    return {
        "strategy": spec.name,
        "index": item.index,
        **scored,
        "question": item.question,
        "answer": item.answer,
        "conclusion": raw.content,
        "chosen": raw.record.get("chosen"),
        "input_tokens": raw.usage.get("input_tokens", 0),
        "output_tokens": raw.usage.get("output_tokens", 0),
        "requests": (raw.record.get("usage") or {}).get("model_calls", 0),
        "seconds": raw.seconds,
    }


def _chat_model(backend: Any, spec: StrategySpec, options: dict[str, Any]) -> Any:
    from langchain_llava_cot.chat_models import ChatLlavaCoT

    return ChatLlavaCoT(
        backend=backend,
        strategy=spec.strategy,  # type: ignore[arg-type]
        candidates=spec.candidates,
        adaptive=spec.adaptive,
        judge=spec.judge or "pairwise",
        temperature=options["temperature"],
        top_p=options["top_p"],
        max_stage_tokens=options["max_stage_tokens"],
    )


def _seed(item: Any, options: dict[str, Any]) -> int:
    return int(options["seed"]) + int(getattr(item, "position", item.index))


async def _aask(llm: Any, item: Any, options: dict[str, Any]) -> _Raw:
    seed = _seed(item, options)
    random.seed(seed)
    started = time.perf_counter()
    message = await llm.ainvoke([item.message()], seed=seed)
    return _raw(message, time.perf_counter() - started)


def _raw(message: Any, seconds: float) -> _Raw:
    return _Raw(
        str(message.content),
        message.response_metadata["llava_cot"],
        dict(message.usage_metadata or {}),
        seconds,
    )


_WORKER: dict[str, Any] = {}


def _init_worker(model: str) -> None:
    import torch

    from langchain_llava_cot.backends.transformers import TransformersBackend

    torch.set_num_threads(1)
    _WORKER["backend"] = TransformersBackend(model)


def _worker_ask(spec: StrategySpec, item: Any, options: dict[str, Any]) -> _Raw:
    llm = _chat_model(_WORKER["backend"], spec, options)
    seed = _seed(item, options)
    random.seed(seed)
    started = time.perf_counter()
    message = llm.invoke([item.message()], seed=seed)
    return _raw(message, time.perf_counter() - started)


def _summarize(spec: StrategySpec, records: list[dict[str, Any]]) -> StrategyResult:
    n = len(records)
    result = StrategyResult(
        spec.name, spec.strategy, spec.candidates, spec.judge, questions=n, records=records
    )
    if not n:
        return result
    correct = sum(float(r["correct"]) for r in records)
    result.accuracy = correct / n
    result.accuracy_interval = wilson_interval(correct, n)
    result.well_formed = sum(r["well_formed"] for r in records) / n
    result.unreadable = sum(not r.get("readable", True) for r in records) / n
    passes = [r["pass"] for r in records if r.get("pass") is not None]
    result.pass_at_n = sum(passes) / len(passes) if passes else None
    result.tokens_per_question = statistics.mean(r["input_tokens"] + r["output_tokens"] for r in records)
    result.generated_per_question = statistics.mean(r["output_tokens"] for r in records)
    result.requests_per_question = statistics.mean(r.get("requests", 0) for r in records)
    result.seconds_per_question = statistics.mean(r["seconds"] for r in records)
    if all("caption_right" in r for r in records):
        result.caption_right = sum(r["caption_right"] for r in records) / n
        result.follows_caption = sum(r["follows_caption"] for r in records) / n
    kinds: dict[str, list[float]] = {}
    for r in records:
        kinds.setdefault(str(r.get("category", r.get("kind", ""))), []).append(float(r["correct"]))
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


def _correct(result: StrategyResult) -> list[float]:
    return [float(r["correct"]) for r in result.records]


def _progress(total: int, enabled: bool) -> Any:
    from tqdm.auto import tqdm

    return tqdm(total=total, disable=not enabled or total == 0, unit="q", dynamic_ncols=True)


def _payload(
    results: Sequence[StrategyResult], settings: dict[str, Any], questions: int, model: str, keep: bool
) -> dict[str, Any]:
    return {
        **settings,
        "questions": questions,
        "model": model,
        "results": [{k: v for k, v in asdict(r).items() if keep or k != "records"} for r in results],
    }


def _write_json(out: Path, payload: dict[str, Any]) -> Path:
    path = out / "eval.json"
    path.write_text(json.dumps(payload, indent=1, default=str))
    return path
