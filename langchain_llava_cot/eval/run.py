"""Running an eval: each strategy answers every question, resumably and concurrently.

The questions are the demo's held-out ones (:func:`~langchain_llava_cot.demo.dataset.examples`) or
a benchmark file's (:func:`~langchain_llava_cot.eval.data.load_questions`). Every strategy shares one
backend (in-process, a served model, or any ready backend or LangChain chat model); ``concurrency``
questions are in flight at once (``ainvoke`` under a semaphore: requests to a server overlap, and the
in-process engine merges concurrent requests into shared ``generate`` calls), or each of ``workers``
processes loads its own copy of an in-process model (:mod:`~langchain_llava_cot.eval.asking`). Each
answer is scored (:mod:`~langchain_llava_cot.eval.scorers`) and appended at once to ``answers.jsonl``
(:class:`~langchain_llava_cot.eval.answers.AnswerLog`), so the same call with the same ``output_dir``
asks only what is not there yet. The answers of each strategy are summed up and compared in pairs
(:mod:`~langchain_llava_cot.eval.summary`). Every option, and each strategy's search, is checked
before the data is read or a model loaded.

>>> report = run_eval(questions=500, strategies=["greedy", "stage_beam:pairwise:4"])  # doctest: +SKIP
>>> report = run_eval(data="MMStar.tsv", base_url="http://127.0.0.1:8000/v1", concurrency=8)  # doctest: +SKIP
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from langchain_llava_cot.eval.answers import ANSWERS_FILE, AnswerLog
from langchain_llava_cot.eval.asking import Answer, Answerer, chat_model, local_model
from langchain_llava_cot.eval.report import EvalReport, StrategyResult, plot
from langchain_llava_cot.eval.scorers import DemoScorer, FileScorer
from langchain_llava_cot.eval.scoring import DEFAULT_TOLERANCE
from langchain_llava_cot.eval.strategies import StrategySpec, default_strategies, parse_strategy
from langchain_llava_cot.eval.summary import compare_pairs, summarize
from langchain_llava_cot.options import DEFAULT_TEMPERATURE, DEFAULT_TOP_P, model_or_demo

__all__ = ["RUN_FILE", "check_output_dir", "run_eval"]

RUN_FILE = "run.json"
"""What a run measured (data, model, sampling): a rerun into the same folder must match it."""


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
    timeout: float | None = None,
    grader: Any = None,
    tolerance: float = DEFAULT_TOLERANCE,
    concurrency: int = 1,
    keep_records: bool = True,
    max_stage_tokens: int | Mapping[str, int] | None = None,
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
        timeout: Seconds one reply of the server may take, its time in the server's queue included
            (None: the backend's 60). Raise it when more questions are in flight than the server
            answers at once.
        grader: A :class:`~langchain_llava_cot.eval.grading.Grader` (or a LangChain chat model) that
            scores open answers of a file 0-1; None scores them by exact match.
        tolerance: Numbers match within this share of the expected one.
        concurrency: Questions in flight at once.
        keep_records: Keep every question's scores in ``eval.json``.
        max_stage_tokens: Token limit of each stage, one number or one per stage name (None: the
            engine's defaults).
        workers: Processes that answer in parallel, each loading the in-process model with one torch
            thread (on small CPU models 2 workers on 2 cores beat one with 2 threads).
        on_skip: Called with one line per row of ``data`` that was skipped (an undecodable picture...).

    Returns:
        The report; ``report.table()`` renders the table.

    Raises:
        RuntimeError: Called where an event loop runs (a notebook, async code): ``run_eval`` runs its
            own; call it in a thread there (``await asyncio.to_thread(run_eval, ...)``).
    """
    _check_no_running_loop()
    options = {"temperature": temperature, "top_p": top_p, "seed": seed, "max_stage_tokens": max_stage_tokens}
    specs = _check_options(
        strategies, options, questions, split, concurrency, workers, backend, base_url, model, timeout
    )
    out = check_output_dir(output_dir)
    items, source = _questions(data, columns, questions, shuffle, split, start, on_skip)
    scorer = DemoScorer() if data is None else FileScorer(tolerance, _grader(grader))
    settings = {
        "data": source,
        "model": _model_label(model, backend, base_url, served_model),
        "weights": None if backend is not None or base_url is not None else weights_fingerprint(model),
        "split": split if data is None else None,
        "temperature": temperature,
        "top_p": top_p,
        "seed": seed,
        "max_stage_tokens": max_stage_tokens,
    }
    model_name = str(settings["model"])

    def checkpoint(results: Sequence[StrategyResult]) -> None:  # a run cut short keeps what it measured
        if out is not None:
            compare_pairs(results)
            _write_json(out, _payload(results, settings, len(items), model_name, keep_records))

    log = AnswerLog(out / ANSWERS_FILE if out is not None else None)  # refused while another run writes it
    answerer = Answerer(
        model=model, backend=backend, base_url=base_url, served_model=served_model, api_key=api_key,
        timeout=timeout, workers=workers, concurrency=concurrency,
    )  # fmt: skip
    with log, contextlib.closing(answerer):
        if out is not None:
            _check_same_run(out, settings)
        kept = sum(log.has(spec.name, item.index) for spec in specs for item in items)
        if base_url is not None and kept < len(specs) * len(items):
            answerer.ready_backend()  # a dead server or a wrong model name: one error now, not per question
        with contextlib.closing(_progress(len(specs) * len(items) - kept, progress)) as bar:
            results = _answer_strategies(specs, items, answerer, options, scorer, log, bar, checkpoint)
    compare_pairs(results)
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
    options: dict[str, Any],
    questions: int | None,
    split: str,
    concurrency: int,
    workers: int,
    backend: Any,
    base_url: str | None,
    model: str | Path | None,
    timeout: float | None,
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
    for spec in specs:
        _check_search(spec, options)
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
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0
    ):
        msg = f"timeout must be a number of seconds above 0, got {timeout!r}."
        raise ValueError(msg)
    if timeout is not None and base_url is None:
        msg = "timeout is how long a served model's reply may take: pass it with base_url (--base-url)."
        raise ValueError(msg)
    if model is not None:
        local_model(model)
    return specs


def _check_no_running_loop() -> None:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return
    msg = (
        "run_eval runs its own event loop, and one runs here (a notebook, async code); call it in a "
        "thread: await asyncio.to_thread(run_eval, ...)."
    )
    raise RuntimeError(msg)


def _check_search(spec: StrategySpec, options: dict[str, Any]) -> None:
    """Refuse now, in one line, a search the engine would refuse at every question.

    Retrace with a judge that does not score, a negative temperature, a stage limit of 0...
    """
    from pydantic import ValidationError

    from langchain_llava_cot.cli import one_line

    try:
        chat_model(None, spec, options)  # validates every search option; loads nothing
    except (ValidationError, ValueError, TypeError) as e:
        msg = f"{spec.name}: {one_line(e)}"
        raise ValueError(msg) from e


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


def weights_fingerprint(model: str | Path | None) -> str | None:
    """A short fingerprint of a local model folder's weights (None: not a folder with weight files).

    Each weight file's name, size and first MiB: cheap for any size of model, and changed
    by retraining into the same folder, so a resumed run never mixes two models' answers.
    """
    folder = Path(model_or_demo(model)).expanduser()
    files = sorted(
        file for pattern in ("*.safetensors", "*.bin") for file in folder.glob(pattern) if file.is_file()
    )
    if not files:
        return None
    digest = hashlib.sha256()
    for file in files:
        digest.update(f"{file.name}:{file.stat().st_size}:".encode())
        with file.open("rb") as opened:
            digest.update(opened.read(1 << 20))
    return digest.hexdigest()[:16]


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


def _answer_strategies(
    specs: Sequence[StrategySpec],
    items: Sequence[Any],
    answerer: Answerer,
    options: dict[str, Any],
    scorer: Any,
    log: AnswerLog,
    bar: Any,
    checkpoint: Callable[[Sequence[StrategyResult]], None],
) -> list[StrategyResult]:
    """Each strategy's result, asking only what ``log`` lacks; ``checkpoint`` after each strategy."""
    results: list[StrategyResult] = []
    for spec in specs:
        todo = [item for item in items if not log.has(spec.name, item.index)]
        if todo:
            bar.set_description(spec.name)
            asyncio.run(_answer_all(answerer, spec, todo, options, scorer, log, bar))
        results.append(summarize(spec, [log.get(spec.name, item.index) for item in items]))
        checkpoint(results)
    return results


async def _answer_all(
    answerer: Answerer,
    spec: StrategySpec,
    items: Sequence[Any],
    options: dict[str, Any],
    scorer: Any,
    log: AnswerLog,
    bar: Any,
) -> None:
    """Ask ``items`` with ``spec``, ``answerer.in_flight`` at a time; log each answer as it is scored."""
    from langchain_llava_cot.cli import one_line

    gate = asyncio.Semaphore(answerer.in_flight)
    right: list[float] = [0.0, 0.0]

    async def one(item: Any) -> None:
        async with gate:
            try:
                raw = await answerer.ask(spec, item, options)
            except ValueError as e:  # this question cannot be asked (too long a prompt...): wrong, noted
                raw = Answer("", {}, {}, 0.0)
                category = str(getattr(item, "category", getattr(item, "kind", "")))
                scored: dict[str, Any] = {
                    "correct": False, "readable": False, "well_formed": False, "pass": False,
                    "decisions": [], "category": category, "error": one_line(e),
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


def _record(spec: StrategySpec, item: Any, raw: Answer, scored: dict[str, Any]) -> dict[str, Any]:
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
