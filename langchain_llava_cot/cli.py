"""The ``llava-cot`` command.

``llava-cot ask IMAGE QUESTION`` runs the search graph and shows each stage as its
judge chooses it: a live line while candidates are sampled and judged, then every
candidate with the winner marked. ``--json`` prints the whole search record instead.
``llava-cot serve`` serves the search to OpenAI clients (:mod:`langchain_llava_cot.server`).
"""

from __future__ import annotations

import argparse
import json
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, Union, get_args, get_origin

from rich.console import Console
from rich.markup import escape
from rich.status import Status

__all__ = ["DEMO_MODEL_NOTE", "main", "one_line"]


_DELEGATED = {
    "eval": ("langchain_llava_cot.eval", "measure search strategies on held-out demo questions"),
    "train-demo": ("langchain_llava_cot.demo.train", "train the demo model from scratch"),
}
"""Commands whose own module parses the rest of the command line."""


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in _DELEGATED:
        import importlib

        module = importlib.import_module(_DELEGATED[argv[0]][0])
        sys.argv[0] = f"llava-cot {argv[0]}"
        return int(module.main(argv[1:]) or 0)
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        return int(args.run(args) or 0)
    except Exception as e:
        if args.debug:
            raise
        bad_input = isinstance(e, (ValueError, TypeError, FileNotFoundError, IsADirectoryError, ImportError))
        Console(stderr=True, soft_wrap=True).print(f"[bold red]error:[/] {escape(one_line(e))}")
        return 2 if bad_input else 1


def one_line(error: BaseException) -> str:
    """An error as one line: the message a person needs, without validation boilerplate.

    >>> one_line(RuntimeError("Cannot reach the server.   Start it."))
    'Cannot reach the server. Start it.'
    """
    errors = getattr(error, "errors", None)
    if callable(errors) and type(error).__name__ == "ValidationError":  # pydantic
        first = errors()[0]
        where = ".".join(str(part) for part in first.get("loc", ()))
        message = str(first.get("msg", error)).removeprefix("Value error, ")
        text = f"{where}: {message}" if where and not first.get("type") == "value_error" else message
    else:
        text = str(error) or type(error).__name__
    return " ".join(text.split())


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="llava-cot", description="LLaVA-CoT answers with stage-level beam search."
    )
    commands = parser.add_subparsers(required=True, metavar="COMMAND")

    defaults = argparse.ArgumentDefaultsHelpFormatter
    ask = commands.add_parser(
        "ask", help="answer a question about an image, stage by stage", formatter_class=defaults
    )
    ask.add_argument("image", type=Path, help="image file (PNG, JPEG...)")
    ask.add_argument("question")
    _add_search_options(ask)
    ask.add_argument("--json", action="store_true", help="print the whole search record as JSON")
    ask.set_defaults(run=_ask)

    demo = commands.add_parser(
        "demo",
        help="the bundled demo model answers a question about the bundled image",
        formatter_class=defaults,
    )
    _add_search_options(demo)
    demo.add_argument("--json", action="store_true", help="print the whole search record as JSON")
    demo.set_defaults(run=_demo)

    from langchain_llava_cot.server.command import add_serve_options, serve

    serving = commands.add_parser(
        "serve", help="serve the search behind an OpenAI-compatible endpoint", formatter_class=defaults
    )
    _add_search_options(serving)
    add_serve_options(serving)
    serving.set_defaults(run=lambda args: serve(args, _search_flags(args)))

    for name, (_, text) in _DELEGATED.items():
        commands.add_parser(name, help=text, add_help=False)
    return parser


def _add_search_options(parser: argparse.ArgumentParser) -> None:
    """The model flags, and a flag per search option, read from :class:`SearchOptions`.

    A flag left out leaves the option's own default (argparse's ``SUPPRESS``), so every
    default and every check stays in the one declaration.
    """
    from langchain_llava_cot.options import SearchOptions

    parser.add_argument("--model", help="model folder or hub id; None: the bundled demo model")
    parser.add_argument("--base-url", help="OpenAI-compatible server, e.g. http://127.0.0.1:8000/v1")
    parser.add_argument("--device", default="cpu", help="device of an in-process model")
    for name, field in SearchOptions.model_fields.items():
        flag = "--" + name.replace("_", "-")
        help_text = f"{' '.join((field.description or '').split())} (default: {field.default})"
        parser.add_argument(flag, default=argparse.SUPPRESS, help=help_text, **_flag_kind(name, field))
    parser.add_argument("--debug", action="store_true", help="show the traceback of an error")


def _flag_kind(name: str, field: Any) -> dict[str, Any]:
    """How argparse reads an option's flag, from its declared type."""
    if name == "judge":  # named judges only: objects and functions come from Python
        from langchain_llava_cot.judges import BuiltinJudge

        return {"choices": [j for j in get_args(BuiltinJudge) if j != "human"]}
    if name == "strategy":  # the registry's, as the parser is made: a registered strategy is a choice
        from langchain_llava_cot.strategies import strategy_names

        return {"choices": list(strategy_names())}
    if name == "stop":
        return {"action": "append", "metavar": "TEXT"}
    kind = field.annotation
    if get_origin(kind) in (Union, types.UnionType):  # X | None, int | dict: the first kind
        kind = next(k for k in get_args(kind) if k is not type(None))
    if get_origin(kind) is Literal:
        return {"choices": list(get_args(kind))}
    if kind is bool:
        return {"action": argparse.BooleanOptionalAction}
    return {"type": kind if kind in (int, float) else int}  # int | dict (stage limits): one number here


def _search_flags(args: argparse.Namespace) -> dict[str, Any]:
    """The search options given on the command line (those not given keep their defaults)."""
    from langchain_llava_cot.options import SearchOptions

    return {name: value for name, value in vars(args).items() if name in SearchOptions.model_fields}


DEMO_MODEL_NOTE = (
    "The bundled demo model knows only drawings of up to six circles, squares and triangles "
    "in four colours; pass --model for a real VLM."
)


def _quiet_loading() -> None:
    """Keep transformers' weight-loading progress bars out of the command's output."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        return
    hf_logging.disable_progress_bar()


def _demo(args: argparse.Namespace) -> int:
    from langchain_llava_cot.demo import DEMO_QUESTION, demo_image_path
    from langchain_llava_cot.options import SearchOptions

    args.image, args.question = demo_image_path(), DEMO_QUESTION
    console = Console(stderr=args.json, highlight=False)
    console.print(f"[bold]Question:[/] {DEMO_QUESTION}  [dim](image: {args.image})[/]")
    options = SearchOptions(**_search_flags(args))
    judge = "the judge that fits the model" if options.judge == "auto" else f"{options.judge} judge"
    search = f"Search: {options.strategy}, {options.candidates} candidates, {judge}."
    console.print(f"[dim]{DEMO_MODEL_NOTE} {search}[/]\n")
    return _ask(args)


def _ask(args: argparse.Namespace) -> int:
    from langchain_llava_cot.chat_models import ChatLlavaCoT
    from langchain_llava_cot.images import image_message
    from langchain_llava_cot.streaming import message_from_state

    if not args.question.strip():
        msg = "The question is empty: ask something about the picture, e.g. 'How many red squares?'."
        raise ValueError(msg)
    if args.image.is_dir():
        msg = f"{str(args.image)!r} is a folder; pass an image file (PNG, JPEG...)."
        raise IsADirectoryError(msg)
    if not args.image.is_file():
        msg = f"Image file {str(args.image)!r} does not exist."
        raise FileNotFoundError(msg)
    _quiet_loading()
    llm = ChatLlavaCoT(model=args.model, base_url=args.base_url, device=args.device, **_search_flags(args))
    message = image_message(args.image.read_bytes(), args.question)
    console = Console(stderr=args.json, highlight=False)
    if args.model is None and args.base_url is None and args.run is _ask:
        console.print(f"[dim]{DEMO_MODEL_NOTE}[/]")
    graph_input = llm.graph_input([message])
    with console.status("loading the model...") as status:
        context = llm.search_context()
        state = _run_with_display(llm, graph_input, context, console, status)
    answer = message_from_state(state, llm.model_name, context.strategy)
    if args.json:
        print(json.dumps({**answer.response_metadata, "usage": answer.usage_metadata}, indent=2))
    else:
        _print_summary(console, answer.response_metadata["llava_cot"], answer.usage_metadata)
    return 0


def _run_with_display(llm: Any, graph_input: Any, context: Any, console: Console, status: Status) -> Any:
    """Stream the graph, updating the live status line and printing each chosen stage."""
    state: Any = {}
    shown_judge = False
    events = llm.graph.stream(graph_input, context=context, stream_mode=["tasks", "custom", "values"])
    for mode, data in events:
        if mode == "values":
            state = data
        elif mode == "tasks" and "input" in data:
            action, _, stage = data["name"].partition("_")
            doing = f"sampling {context.width} candidate(s)" if action == "expand" else "judging"
            status.update(f"{doing} for [bold]{stage}[/]...")
        elif mode == "custom" and data.get("event") == "chosen":
            if data.get("judge") and not shown_judge:
                shown_judge = True
                console.print(f"[dim]Judge: {escape(_judge_line(data['judge']))}[/]\n")
            _print_step(console, data["step"])
    return state


def _judge_line(judge: dict[str, Any]) -> str:
    """Which judge ran and why, in one line: ``likelihood (the demo model: ...)``."""
    return f"{judge['name']} ({judge['reason']})"


def _print_step(console: Console, step: dict[str, Any]) -> None:
    span = step.get("span") or [step["stage"]]
    stage = span[0].upper() if len(span) == 1 else f"{span[0].upper()} TO {span[-1].upper()}"
    n = len(step["candidates"])
    scores = step.get("scores")
    if n == 1:
        how = "1 candidate"
    elif scores:
        how = f"{n} candidates, scored by the {step['judge']} judge"
    else:
        compared = [c for c in step["comparisons"] if c["method"] != "precheck"]
        failed = [
            c for c in step["comparisons"] if c["method"] == "precheck" and c["detail"].endswith("failed")
        ]
        how = f"{n} candidates, {len(compared)} comparisons"
        how += f", {len(failed)} failed the pre-check" if failed else ""
    if step.get("stopped_early"):
        how += f", stopped early on {step['stopped_early']}"
    seconds = step["sample_seconds"] + step["judge_seconds"]
    console.print(f"[bold cyan]{stage}[/] [dim]({how}, {seconds:.2f} s)[/]")
    for index, candidate in enumerate(step["candidates"]):
        mark = "[green]>[/]" if index == step["winner"] else " "
        style = "" if index == step["winner"] else "dim"
        text = " ".join(candidate["text"].split()) or "(empty)"
        if scores and scores[index] is not None:
            text = f"[{scores[index]:+.2f}] {text}"
        if "path" in candidate:  # dvts, particle_filter: the path it continues
            text = f"(path {candidate['path']}) {text}"
        flags = f" [yellow]({'; '.join(candidate['problems'])})[/]" if candidate["problems"] else ""
        console.print(
            f" {mark} [{style}]{escape(text)}[/]{flags}" if style else f" {mark} {escape(text)}{flags}"
        )
        for line in _step_lines((step.get("step_scores") or [None] * (index + 1))[index]):
            console.print(f"     [dim]{escape(line)}[/]")
    if "paths" in step:
        going_on = step.get("resampled", step.get("kept"))
        if going_on is not None:
            console.print(f"   [dim]the paths kept: candidates {going_on}[/]")
    if retrace := step.get("retrace"):
        verdict = "going back to the caption" if retrace["retraced"] else "kept"
        score = "none" if retrace["kth_score"] is None else f"{retrace['kth_score']:+.2f}"
        console.print(
            f"   [yellow]try {retrace['attempt']}: score {score} against threshold "
            f"{retrace['threshold']:+.2f}, {verdict}[/]"
        )
    console.print()


def _step_lines(steps: list[dict[str, Any]] | None) -> list[str]:
    """A candidate's step scores, one line each, the weakest marked."""
    if not steps:
        return []
    weakest = min(range(len(steps)), key=lambda i: steps[i]["score"])
    lines = []
    for i, found in enumerate(steps):
        text = " ".join(found["text"].split())
        short = text if len(text) <= 60 else f"{text[:57]}..."
        lines.append(f"[{found['score']:+.2f}] {short}{'  <- weakest step' if i == weakest else ''}")
    return lines


def _print_summary(console: Console, record: dict[str, Any], usage: Any) -> None:
    conclusion = record["chosen"].get("conclusion", "")
    console.print(f"[bold]Answer:[/] {escape(conclusion)}")
    if record.get("judge"):
        console.print(f"[dim]Judge: {escape(_judge_line(record['judge']))}[/]")
    console.print(
        f"[dim]{record['strategy']}: {usage['output_tokens']} tokens generated, "
        f"{usage['input_tokens']} read, {record['usage'].get('model_calls', 0)} model calls, "
        f"{record['seconds']:.2f} s[/]"
    )


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
