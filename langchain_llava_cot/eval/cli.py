"""``llava-cot eval``: measure search strategies on the demo's held-out questions or a benchmark file.

Every option is checked, and the data file read, before a model is loaded; bad input ends with
one ``error:`` line and exit status 2, a model or server failure with one line and status 1, and
Ctrl-C with a line saying how many answers ``answers.jsonl`` keeps (rerun the same command to go on).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import Any

from langchain_llava_cot.eval.strategies import GRID_STRATEGIES, default_strategies
from langchain_llava_cot.options import DEFAULT_TEMPERATURE

__all__ = ["main", "parser"]

_BAD_INPUT = (ValueError, TypeError, FileNotFoundError, IsADirectoryError, NotADirectoryError, ImportError)


def parser() -> argparse.ArgumentParser:
    """The command line of ``llava-cot eval``."""
    p = argparse.ArgumentParser(
        prog="llava-cot eval",
        description="Measure search strategies on held-out demo questions, or on your benchmark file with "
        "your model (in-process or served).",
    )
    data = p.add_argument_group("questions")
    data.add_argument(
        "--data",
        help="a benchmark file: VLMEvalKit .tsv, .jsonl/.json, .parquet, or a datasets save_to_disk folder "
        "(default: the demo's held-out questions)",
    )
    data.add_argument(
        "--columns",
        help="columns of a file's fields where the usual names fail, e.g. question=query,image=decoded_image",
    )
    data.add_argument(
        "--questions", type=int, default=None, help="how many to ask (default: all of a file; 100 demo ones)"
    )
    data.add_argument(
        "--shuffle", type=int, default=None, metavar="SEED", help="shuffle a file's questions first"
    )
    data.add_argument(
        "--start", type=int, default=0, help="the demo: index of the first question (default 0)"
    )
    data.add_argument(
        "--split", default="test", choices=["test", "validation"], help="the demo's split (default test)"
    )
    data.add_argument(
        "--world",
        default="free",
        choices=["free", "novel", "classic"],
        help="the demo's questions: free (pictures drawn freely, trained wordings; default), novel (wordings "
        "and looks held out of training) or classic (the first demo model's grid pictures)",
    )
    model = p.add_argument_group("model")
    model.add_argument("--model", help="model folder, answered in-process (default: the bundled demo model)")
    model.add_argument(
        "--base-url", help="an OpenAI-compatible server instead, e.g. http://127.0.0.1:8000/v1"
    )
    model.add_argument("--served-model", help="the served model's name (default: the one the server lists)")
    model.add_argument(
        "--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
        help="environment variable holding the server's API key (default OPENAI_API_KEY; unset: no key)",
    )  # fmt: skip
    model.add_argument(
        "--timeout", type=float, default=None, metavar="SECONDS",
        help="a served model: seconds one reply may take, its wait in the server's queue included "
        "(default 60); raise it when more questions are in flight than the server answers at once",
    )  # fmt: skip
    which = p.add_argument_group("strategies").add_mutually_exclusive_group()
    which.add_argument(
        "--strategies",
        default=None,
        help="comma-separated: greedy, best_of_n:verifier:4, stage_beam:likelihood:8, ... "
        f"(default: {','.join(default_strategies())})",
    )
    which.add_argument(
        "--grid", action="store_true", help=f"the full grid: {len(GRID_STRATEGIES)} strategies (slow)"
    )
    scoring = p.add_argument_group("scoring")
    scoring.add_argument(
        "--grader", metavar="PROVIDER:MODEL",
        help="a LangChain chat model that scores open answers 0-1 (init_chat_model), e.g. "
        "openai:gpt-4o-mini; default: exact match",
    )  # fmt: skip
    scoring.add_argument(
        "--tolerance", type=float, default=0.01, help="numbers match within this share (default 0.01)"
    )
    run = p.add_argument_group("run")
    run.add_argument("--concurrency", type=int, default=1, help="questions in flight at once (default 1)")
    run.add_argument(
        "--workers", type=int, default=1, help="in-process: parallel processes, one torch thread each"
    )
    run.add_argument(
        "--temperature", type=float, default=DEFAULT_TEMPERATURE, help=f"(default {DEFAULT_TEMPERATURE})"
    )
    run.add_argument("--seed", type=int, default=0, help="(default 0)")
    run.add_argument(
        "--max-stage-tokens", type=int, default=None, help="(default: the engine's per-stage limits)"
    )
    run.add_argument(
        "--out", default="eval-results",
        help="folder for answers.jsonl (resumed when it exists), eval.json and eval.png "
        "(default eval-results)",
    )  # fmt: skip
    run.add_argument("--no-progress", action="store_true")
    run.add_argument("--debug", action="store_true", help="show the traceback of an error")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``llava-cot eval``; returns the exit status."""
    args = parser().parse_args(argv)
    from rich.console import Console

    errors = Console(stderr=True, soft_wrap=True, highlight=False)
    try:
        return _run(args, errors)
    except KeyboardInterrupt:
        errors.print(
            f"interrupted: the answers so far are in {args.out}/answers.jsonl; run the same command to go on."
        )
        return 130
    except Exception as e:
        if args.debug:
            raise
        from rich.markup import escape

        errors.print(f"[bold red]error:[/] {escape(_what_to_do(e, args))}")
        return 2 if isinstance(e, _BAD_INPUT) else 1


def _what_to_do(error: Exception, args: argparse.Namespace) -> str:
    """The error as one line, naming this command's option where the message names an argument."""
    from langchain_llava_cot.backends.openai.errors import ServerTimeoutError
    from langchain_llava_cot.cli import one_line

    line = one_line(error)
    if isinstance(error, ServerTimeoutError):
        now = f"{args.timeout:g}" if args.timeout is not None else "60"
        line = line.replace(
            "Raise timeout=.", f"Rerun the same command with a longer --timeout (now {now} s)"
        )
        line += f"; the answers so far are kept in {args.out}/answers.jsonl."
    return line


def _run(args: argparse.Namespace, errors: Any) -> int:
    from rich.console import Console
    from rich.markup import escape

    from langchain_llava_cot.eval.data import parse_columns
    from langchain_llava_cot.eval.run import run_eval

    for option in ("questions", "concurrency", "workers"):
        value = getattr(args, option)
        if value is not None and value < 1:
            msg = f"--{option} must be a whole number of at least 1, got {value}."
            raise ValueError(msg)
    if args.tolerance < 0 or args.tolerance != args.tolerance:
        msg = f"--tolerance must be 0 or more, got {args.tolerance}."
        raise ValueError(msg)
    if args.data is None and args.columns:
        msg = "--columns names the columns of a --data file."
        raise ValueError(msg)
    grader = None
    if args.grader:
        from langchain_llava_cot.eval.grading import grader_from_spec

        grader = grader_from_spec(args.grader)
    strategies = (
        GRID_STRATEGIES if args.grid
        else None if args.strategies is None
        else [s.strip() for s in args.strategies.split(",") if s.strip()]
    )  # fmt: skip
    report = run_eval(
        args.model,
        data=args.data,
        columns=parse_columns(args.columns),
        strategies=strategies,
        questions=args.questions if args.questions is not None or args.data else 100,
        start=args.start,
        split=args.split,
        world=args.world,
        shuffle=args.shuffle,
        temperature=args.temperature,
        seed=args.seed,
        output_dir=args.out,
        progress=not args.no_progress,
        base_url=args.base_url,
        served_model=args.served_model,
        api_key=os.environ.get(args.api_key_env) or None,
        timeout=args.timeout,
        grader=grader,
        tolerance=args.tolerance,
        concurrency=args.concurrency,
        workers=args.workers,
        max_stage_tokens=args.max_stage_tokens,
        on_skip=lambda line: errors.print(f"[yellow]{escape(' '.join(line.split()))}[/]"),
    )
    console = Console()
    if not console.is_terminal:  # a pipe, a CI log: do not cut the columns
        console = Console(width=200)
    if report.kept or report.dropped:
        torn = f"; cut {report.dropped} torn line(s) and asked those again" if report.dropped else ""
        console.print(f"Kept {report.kept} answers already in {args.out}/answers.jsonl{torn}.")
    for line in report.failures():
        errors.print(f"[yellow]could not ask (counted wrong): {escape(line)}[/]")
    console.print(report.table())
    if (categories := report.category_table()) is not None:
        console.print(categories)
    if report.scaling():
        console.print("More candidates, same search and judge (paired):\n  " + "\n  ".join(report.scaling()))
    console.print(f"answers: {args.out}/answers.jsonl\nJSON: {report.json_path}\nplot: {report.plot_path}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
