"""The search engine: a LangGraph state machine with an expand and a judge node per stage.

    START -> expand_summary -> judge_summary -> expand_caption -> judge_caption
          -> expand_reasoning -> judge_reasoning -> expand_conclusion -> judge_conclusion -> END

- ``expand_<stage>`` asks the run's strategy for the step's candidates (continuations of the
  chosen prefix that stop at the stage's closing tag, or, for ``best_of_n``, whole answers).
- ``judge_<stage>`` asks the strategy to judge them, records the step (every candidate,
  every comparison and score, tokens and timings) and writes what the strategy settled.
- After a judge, and at START, a router asks the strategy where to go: by default the first
  stage not chosen yet, so a run resumed with some stages already chosen skips them.

The nodes hold no strategy of their own: each asks the context's
:class:`~langchain_llava_cot.strategies.SearchStrategy` (one module per strategy in
:mod:`langchain_llava_cot.strategies`) how wide a step is, how far it writes, how it is
judged and where the graph goes next. What every strategy shares is here: the sample
request of a step (:func:`sample_request`), the parsing of a continuation into a candidate
(:func:`candidate`), the judge's task (:func:`judge_task`) and the step's record.

Options come through the runtime context (:class:`~langchain_llava_cot.options.SearchContext`);
the state, its reducers and the search record's types are in
:mod:`langchain_llava_cot.state`. Nodes write their progress to LangGraph's ``custom``
stream. This module never imports torch: only the backend in the context talks to a model.

Checkpoints: the conversation (with its image bytes) lives in a channel that is
written once per run and stored once, as the write itself, instead of being copied
into every checkpoint; :func:`~langchain_llava_cot.state.checkpoint_serializer` lets
its types be read back without warnings. With a checkpointer, a run interrupted after
any node resumes where it stopped, and ``judge="human"`` interrupts each judge for a
person's choice.

Example::

    graph = build_graph()
    state = graph.invoke({"conversation": conversation}, context=SearchContext(backend=backend))
    state["chosen"]["conclusion"]
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, Literal

from langchain_core.runnables import RunnableLambda
from langgraph.config import get_config, get_stream_writer
from langgraph.constants import CONF, CONFIG_KEY_CHECKPOINTER
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import get_runtime

from langchain_llava_cot._calls import Step, adrive, drive
from langchain_llava_cot.backends.base import PromptTooLongError, Sample, SampleRequest, ToolCallConstraint
from langchain_llava_cot.conversation import Conversation
from langchain_llava_cot.judges import JudgeTask, StepScore, Verdict
from langchain_llava_cot.options import SearchContext
from langchain_llava_cot.stages import (
    STAGE_SEPARATOR,
    STAGES,
    TAG_NAMES,
    Stage,
    cut_stage,
    parse_answer,
    render_answer,
)
from langchain_llava_cot.state import (
    CandidateRecord,
    Expansion,
    SearchState,
    StepRecord,
    StepScoreRecord,
    Usage,
)
from langchain_llava_cot.strategies import Expanded, Judged, get_strategy, strategy_names

__all__ = [
    "add_search_nodes",
    "build_graph",
    "candidate",
    "chosen_stages",
    "judge_task",
    "room_left",
    "sample_request",
    "sampling_usage",
    "search_router",
    "settled",
    "step_scores_record",
    "verdict_usage",
]


NodeName = Literal["expand_summary", "expand_caption", "expand_reasoning", "expand_conclusion", "__end__"]


# --- what every strategy shares ----------------------------------------------------------------


def chosen_stages(state: SearchState) -> dict[Stage, str]:
    """The stages chosen so far, by :class:`Stage`."""
    return {Stage(name): text for name, text in (state.get("chosen") or {}).items()}


def _prefix(chosen: Mapping[Stage, str], stage: Stage) -> str:
    """The assistant text a step continues: the chosen stages, then ``stage``'s opening tag."""
    earlier = render_answer(dict(chosen))
    return f"{earlier}{STAGE_SEPARATOR}{stage.open_tag}" if earlier else stage.open_tag


def _tokens_spent(state: SearchState) -> int:
    """Tokens the chosen stages took: each step's winner's."""
    return sum(step["candidates"][step["winner"]]["completion_tokens"] for step in state.get("steps") or [])


_STAGE_TAG = re.compile(rf"</?(?:{TAG_NAMES})>", re.IGNORECASE)


def candidate(span: tuple[Stage, ...], sample: Sample) -> CandidateRecord:
    """Turn a continuation into a candidate, repairing a stage that never closed."""
    first, last = span[0], span[-1]
    stopped = sample.finish_reason == "stop"
    if len(span) == 1:
        text, closed = cut_stage(first, sample.text)
        problems = [] if closed else _unclosed(first, sample.text, stopped)
        closed = closed or not problems
        if not text:
            problems.append(f"{first.open_tag} is empty")
        stages = {first.value: text}
    else:
        full = first.open_tag + sample.text + (last.close_tag if stopped else "")
        parsed = parse_answer(full)
        kept = _leading_stages(parsed.stages, span)
        stages = {s.value: kept[s] for s in kept}
        problems = list(parsed.problems)
        closed = not problems and len(kept) == len(span)
        text = render_answer(kept)
    return CandidateRecord(
        text=text,
        stages=stages,
        finish_reason=sample.finish_reason,
        closed=closed,
        problems=[*sample.repairs, *problems],
        mean_logprob=sample.mean_logprob,
        completion_tokens=sample.completion_tokens,
    )


def _unclosed(stage: Stage, generated: str, stopped: bool) -> list[str]:
    """What is wrong with a stage that its closing tag did not end (none when a stop string did)."""
    tag = _STAGE_TAG.search(generated)
    if tag is not None:
        return [f"{stage.open_tag} ended at {tag.group(0)} instead of {stage.close_tag}; cut there"]
    return [] if stopped else [f"{stage.open_tag} cut at the token limit; closed"]


def _leading_stages(found: dict[Stage, str], span: tuple[Stage, ...]) -> dict[Stage, str]:
    """The stages of ``span`` present without a gap from its start."""
    kept: dict[Stage, str] = {}
    for stage in span:
        if stage not in found:
            break
        kept[stage] = found[stage]
    return kept


def sample_request(
    stage: Stage,
    state: SearchState,
    context: SearchContext,
    room: int | None,
    *,
    chosen: Mapping[Stage, str] | None = None,
    spent: int | None = None,
) -> SampleRequest:
    """The request of one step: ``context.width`` continuations of the chosen prefix.

    Its token limit is the stage's, within what ``max_tokens`` and the model's context
    (``room``) leave, one token kept for each later stage. ``chosen`` and ``spent`` (the
    tokens its stages took) name another path than the chosen one, for strategies that
    carry several.
    """
    span = context.span(stage)
    limit = context.token_limit(span)
    later = len(STAGES) - 1 - STAGES.index(span[-1])
    budget = None
    if context.max_tokens is not None:
        budget = context.max_tokens - (_tokens_spent(state) if spent is None else spent)
    for left in (budget, room):
        if left is not None:
            limit = min(limit, max(left - later, 1))
    stop = (span[-1].close_tag, *(context.stop if span[-1] is Stage.CONCLUSION else ()))
    forced = state["conversation"].forced_tools if span[-1] is Stage.CONCLUSION else ()
    temperature = context.sampling_temperature
    return SampleRequest(
        conversation=state["conversation"],
        prefix=_prefix(chosen_stages(state) if chosen is None else chosen, stage),
        n=context.width,
        stop=stop,
        max_new_tokens=limit,
        temperature=temperature,
        top_p=context.top_p if temperature > 0 else None,
        seed=None if context.seed is None else context.seed + len(state.get("steps") or []),
        tool_call=ToolCallConstraint(forced) if forced else None,
    )


def sampling_usage(samples: Sequence[Sample], calls: int = 1) -> Usage:
    """What sampling ``samples`` in ``calls`` backend calls spent."""
    return Usage(
        input_tokens=sum(s.prompt_tokens for s in samples),
        output_tokens=sum(s.completion_tokens for s in samples),
        model_calls=calls,
    )


def verdict_usage(verdict: Verdict) -> Usage:
    """What a judge's verdict spent."""
    return Usage(
        input_tokens=verdict.prompt_tokens, output_tokens=verdict.completion_tokens, model_calls=verdict.calls
    )


def judge_task(
    stage: Stage, span: Sequence[str], state: SearchState, candidates: Sequence[CandidateRecord],
    chosen: Mapping[Stage, str] | None = None,
) -> JudgeTask:  # fmt: skip
    """What the judge sees of a step: its candidates after the chosen stages (or ``chosen``)."""
    return JudgeTask(
        conversation=state["conversation"],
        stage=stage if len(span) == 1 else None,
        chosen=chosen_stages(state) if chosen is None else chosen,
        candidates=tuple(c["text"] for c in candidates),
        mean_logprobs=tuple(c["mean_logprob"] for c in candidates),
    )


def settled(stage: Stage, winner: CandidateRecord) -> dict[str, dict[str, str]]:
    """The ``chosen`` update of a step whose ``winner`` settles its stages."""
    return {"chosen": {stage.value: "", **winner["stages"]}}


def room_left(
    state: SearchState, context: SearchContext, chosen: Mapping[Stage, str] | None = None
) -> int | None:
    """New tokens the model's context leaves for the stages not chosen yet (None: unknown).

    The prompt counted is the request, the chosen stages (or ``chosen``), and the tags of
    every stage still to write.
    """
    written = chosen_stages(state) if chosen is None else chosen
    ahead = {stage: written.get(stage, "") for stage in STAGES}
    return context.get_backend().tokens_left(state["conversation"], render_answer(ahead))


def step_scores_record(found: Sequence[tuple[StepScore, ...] | None]) -> list[list[StepScoreRecord] | None]:
    """A verdict's step scores as the record keeps them: ``{"text", "score"}`` per step."""
    return [
        None if steps is None else [StepScoreRecord(text=s.text, score=s.score) for s in steps]
        for steps in found
    ]


# --- the nodes -----------------------------------------------------------------------------------


def _check_before_the_first_token(context: SearchContext, room: int | None) -> None:
    """What would fail later fails now: a person's judge without a checkpointer, a request too long."""
    if context.asks_a_person and get_config().get(CONF, {}).get(CONFIG_KEY_CHECKPOINTER) is None:
        msg = (
            "The human judge interrupts the search for a person's choice: compile the graph with a "
            "checkpointer (build_graph(checkpointer=InMemorySaver())), run it with a thread_id, and resume "
            "each stage with Command(resume=<index>)."
        )
        raise ValueError(msg)
    if room is None:
        return
    if room < len(STAGES):
        msg = (
            f"The prompt leaves the model room for {max(room, 0):,} new tokens, fewer than one per stage: "
            "shorten the question or the conversation, or send fewer pictures."
        )
        raise PromptTooLongError(msg)
    if (
        context.max_tokens is not None or context.max_stage_tokens is not None
    ) and context.answer_tokens > room:
        msg = (
            f"The answer may take {context.answer_tokens:,} tokens (max_stage_tokens, max_tokens), but only "
            f"{room:,} fit in the model's context after the prompt: lower them, or shorten the question, the "
            "conversation or the pictures."
        )
        raise ValueError(msg)


def _asked(result: Any) -> Step[Any]:
    """A strategy method's value: driven when it is a generator of backend calls."""
    if isinstance(result, Generator):
        return (yield from result)
    return result


def _expand(stage: Stage, state: SearchState, context: SearchContext) -> Step[dict[str, Any]]:
    room = room_left(state, context)
    if not state.get("steps"):
        _check_before_the_first_token(context, room)
    started = time.perf_counter()
    expanded: Expanded = yield from _asked(context.search_strategy.expand(stage, state, context, room))
    get_stream_writer()({"event": "candidates", "stage": stage.value, "candidates": expanded.candidates})
    expansion = Expansion(
        stage=stage.value,
        span=[s.value for s in context.span(stage)],
        candidates=expanded.candidates,
        sample_seconds=time.perf_counter() - started,
        notes=expanded.notes,
    )
    return {"pending": expansion, "usage": expanded.usage}


def _judge(stage: Stage, state: SearchState, context: SearchContext) -> Step[dict[str, Any]]:
    pending = state.get("pending")
    if not pending or pending["stage"] != stage.value:
        msg = f"judge_{stage.value} ran without candidates of its stage; the graph was entered mid-step."
        raise RuntimeError(msg)
    started = time.perf_counter()
    judged: Judged = yield from _asked(context.search_strategy.judge(stage, state, context, pending))
    verdict = judged.verdict
    step = StepRecord(
        stage=stage.value,
        span=pending["span"],
        candidates=pending["candidates"],
        winner=verdict.winner,
        judge=judged.judge.name if judged.judge else None,
        comparisons=[vars(c) for c in verdict.comparisons],
        scores=list(verdict.scores) if verdict.scores else None,
        sample_seconds=pending["sample_seconds"],
        judge_seconds=time.perf_counter() - started,
    )
    step.update(judged.record)  # type: ignore[typeddict-item]
    if any(found is not None for found in verdict.step_scores):
        step["step_scores"] = step_scores_record(verdict.step_scores)
    update: dict[str, Any] = {"pending": None, "usage": verdict_usage(verdict), **judged.update}
    if judged.judge is not None:
        update["judge"] = context.resolved_judge.describe()
    get_stream_writer()({"event": "chosen", "stage": stage.value, "step": step, "judge": update.get("judge")})
    return {**update, "steps": [step]}


StageLogic = Callable[[Stage, SearchState, SearchContext], Step[dict[str, Any]]]
ConversationOf = Callable[[Mapping[str, Any]], Conversation]
"""Reads the conversation from a graph's state (the default: its ``conversation`` key)."""
ContextOf = Callable[[Any], SearchContext]
"""Makes the search's context from a graph's runtime context (the default: it is one)."""


def _search_context(context_of: ContextOf | None) -> SearchContext:
    """The run's :class:`SearchContext`, from the graph's runtime context."""
    found = get_runtime().context
    if context_of is not None:
        return context_of(found)
    if not isinstance(found, SearchContext):
        msg = (
            "The search graph needs `context=SearchContext(backend=...)` in invoke/stream "
            '(from JSON: a context object such as {"model": "<model folder>"}).'
        )
        raise ValueError(msg)
    return found


def _node(
    logic: StageLogic,
    stage: Stage,
    conversation_of: ConversationOf | None = None,
    context_of: ContextOf | None = None,
) -> RunnableLambda:
    """Wrap stage logic as a node that runs with the backend's sync or async methods."""

    def search_state(state: Any) -> SearchState:
        if conversation_of is None:
            return state
        return {**state, "conversation": conversation_of(state)}  # type: ignore[typeddict-item]

    def run(state: SearchState) -> dict[str, Any]:
        ctx = _search_context(context_of)
        backend = ctx.get_backend()
        return drive(logic(stage, search_state(state), ctx), backend)

    async def arun(state: SearchState) -> dict[str, Any]:
        ctx = _search_context(context_of)
        # loading a model or decoding images blocks: keep it off the event loop
        backend = ctx.backend if ctx.backend is not None else await asyncio.to_thread(ctx.get_backend)
        prepared = (
            search_state(state) if conversation_of is None else await asyncio.to_thread(search_state, state)
        )
        return await adrive(logic(stage, prepared, ctx), backend)

    return RunnableLambda(run, afunc=arun, name=f"{logic.__name__.strip('_')}_{stage.value}")


def search_router(
    context_of: ContextOf | None = None, routes: Mapping[str, str] | None = None
) -> Callable[[SearchState], NodeName]:
    """A router that asks the run's strategy where the graph goes next (its ``next_stage``).

    Args:
        context_of: as in :func:`add_search_nodes`.
        routes: the destinations the edge was built with (None: any); a strategy that asks for
            another one gets an error that says so.
    """

    def route(state: SearchState) -> NodeName:
        strategy = _search_context(context_of).search_strategy
        stage = strategy.next_stage(state)
        node = END if stage is None else f"expand_{stage.value}"
        if routes is not None and node not in routes:
            msg = (
                f"strategy={strategy.name!r} goes to {node}, an edge this graph was built without: "
                "register the strategy (with its goes_back) before building the graph."
            )
            raise ValueError(msg)
        return node  # type: ignore[return-value]

    return route


def add_search_nodes(
    builder: StateGraph[Any, Any, Any, Any],
    *,
    after: str = END,
    conversation_of: ConversationOf | None = None,
    context_of: ContextOf | None = None,
) -> dict[str, str]:
    """Add the expand and judge nodes of every stage to ``builder``, and the routers after the judges.

    Each judge may go on to a later stage, to the end, or back to where a registered strategy
    goes back (its ``goes_back``: retrace's reasoning judge, to the caption).

    Args:
        builder: a graph whose state has :class:`SearchState`'s search keys.
        after: where to go once every stage is chosen.
        conversation_of: reads the conversation from the state, for graphs that keep
            it elsewhere (e.g. derive it from ``messages``); None reads ``conversation``.
        context_of: makes the :class:`SearchContext` from the graph's runtime context, for
            graphs whose context is something else (e.g. a served client's); None takes it as it is.

    Returns:
        The path map of :func:`search_router`, for the edge that enters the search.
    """
    routes = {f"expand_{s.value}": f"expand_{s.value}" for s in STAGES} | {END: after}
    back = {(stage, to) for name in strategy_names() for stage, to in get_strategy(name).goes_back.items()}
    for stage in STAGES:
        builder.add_node(f"expand_{stage.value}", _node(_expand, stage, conversation_of, context_of))
        builder.add_node(f"judge_{stage.value}", _node(_judge, stage, conversation_of, context_of))
        builder.add_edge(f"expand_{stage.value}", f"judge_{stage.value}")
        later = {
            k: v for k, v in routes.items() if k == END or STAGES.index(Stage(k[7:])) > STAGES.index(stage)
        }
        for to in sorted((to for frm, to in back if frm is stage), key=STAGES.index):
            later[f"expand_{to.value}"] = f"expand_{to.value}"
        router = search_router(context_of, later)
        builder.add_conditional_edges(f"judge_{stage.value}", router, later)  # type: ignore[arg-type]
    return routes


def build_graph(**compile_options: Any) -> Any:
    """Build and compile the search graph; ``compile_options`` go to ``compile()``.

    Pass ``checkpointer=`` to make runs resumable, ``interrupt_after=["judge_caption"]``
    to stop after a stage; see :func:`~langchain_llava_cot.state.checkpoint_serializer` for
    the checkpointer's serde.
    """
    builder = StateGraph(SearchState, context_schema=SearchContext)
    routes = add_search_nodes(builder)
    builder.add_conditional_edges(START, search_router(routes=routes), routes)  # type: ignore[arg-type]
    return builder.compile(**compile_options)
