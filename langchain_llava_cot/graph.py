"""The search engine: a LangGraph state machine with an expand and a judge node per stage.

    START -> expand_summary -> judge_summary -> expand_caption -> judge_caption
          -> expand_reasoning -> judge_reasoning -> expand_conclusion -> judge_conclusion -> END

- ``expand_<stage>`` samples the step's candidates: continuations of the chosen prefix
  that stop at the stage's closing tag (or, for ``best_of_n``, whole answers).
- ``judge_<stage>`` prunes them to one, appends it to the chosen prefix and records
  the step: every candidate, every comparison, tokens and timings.
- After a judge, and at START, a router goes to the first stage not chosen yet, so
  a run resumed with some stages already chosen skips them.

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
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any, Literal

from langchain_core.runnables import RunnableLambda
from langgraph.config import get_config, get_stream_writer
from langgraph.constants import CONF, CONFIG_KEY_CHECKPOINTER
from langgraph.graph import END, START, StateGraph
from langgraph.runtime import get_runtime
from langgraph.types import Overwrite

from langchain_llava_cot._calls import SampleCall, Step, adrive, drive, finished
from langchain_llava_cot.backends.base import PromptTooLongError, Sample, SampleRequest, ToolCallConstraint
from langchain_llava_cot.conversation import Conversation
from langchain_llava_cot.judges import Comparison, JudgeTask, StepScore, Verdict, best_index, ranked
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
    RetraceAttempt,
    RetracePath,
    RetraceProgress,
    SearchState,
    StepRecord,
    StepScoreRecord,
    Usage,
    add_usage,
)

__all__ = ["add_search_nodes", "build_graph", "next_stage_node", "step_scores_record"]


NodeName = Literal["expand_summary", "expand_caption", "expand_reasoning", "expand_conclusion", "__end__"]


def next_stage_node(state: SearchState) -> NodeName:
    """Route to the first stage not chosen yet, or to the end."""
    chosen = state.get("chosen") or {}
    for stage in STAGES:
        if stage.value not in chosen:
            return f"expand_{stage.value}"  # type: ignore[return-value]
    return END  # type: ignore[return-value]


def _chosen_stages(state: SearchState) -> dict[Stage, str]:
    return {Stage(name): text for name, text in (state.get("chosen") or {}).items()}


def _prefix(chosen: dict[Stage, str], stage: Stage) -> str:
    """The assistant text a step continues: the chosen stages, then ``stage``'s opening tag."""
    earlier = render_answer(chosen)
    return f"{earlier}{STAGE_SEPARATOR}{stage.open_tag}" if earlier else stage.open_tag


def _tokens_left(state: SearchState, context: SearchContext) -> int | None:
    """What ``max_tokens`` leaves for this step and the later ones (None: no budget)."""
    if context.max_tokens is None:
        return None
    spent = sum(step["candidates"][step["winner"]]["completion_tokens"] for step in state.get("steps") or [])
    return context.max_tokens - spent


_STAGE_TAG = re.compile(rf"</?(?:{TAG_NAMES})>", re.IGNORECASE)


def _candidate(span: tuple[Stage, ...], sample: Sample) -> CandidateRecord:
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


_ROUND_SEED = 7919
"""Added to the seed of an adaptive step's second round, so it does not repeat the first."""


def _sample_request(
    stage: Stage,
    state: SearchState,
    context: SearchContext,
    room: int | None,
    chosen: dict[Stage, str] | None = None,
) -> SampleRequest:
    """The request of one step: ``context.width`` continuations of the chosen prefix.

    Its token limit is the stage's, within what ``max_tokens`` and the model's context
    (``room``) leave, one token kept for each later stage.
    """
    span = context.span(stage)
    limit = context.token_limit(span)
    later = len(STAGES) - 1 - STAGES.index(span[-1])
    for left in (_tokens_left(state, context), room):
        if left is not None:
            limit = min(limit, max(left - later, 1))
    stop = (span[-1].close_tag, *(context.stop if span[-1] is Stage.CONCLUSION else ()))
    forced = state["conversation"].forced_tools if span[-1] is Stage.CONCLUSION else ()
    return SampleRequest(
        conversation=state["conversation"],
        prefix=_prefix(_chosen_stages(state) if chosen is None else chosen, stage),
        n=context.width,
        stop=stop,
        max_new_tokens=limit,
        temperature=context.sampling_temperature,
        top_p=context.top_p if context.sampling_temperature > 0 else None,
        seed=None if context.seed is None else context.seed + len(state.get("steps") or []),
        tool_call=ToolCallConstraint(forced) if forced else None,
    )


def _sampling_usage(samples: Sequence[Sample], calls: int = 1) -> Usage:
    return Usage(
        input_tokens=sum(s.prompt_tokens for s in samples),
        output_tokens=sum(s.completion_tokens for s in samples),
        model_calls=calls,
    )


def _verdict_usage(verdict: Verdict) -> Usage:
    return Usage(
        input_tokens=verdict.prompt_tokens, output_tokens=verdict.completion_tokens, model_calls=verdict.calls
    )


def _judge_task(
    stage: Stage, span: Sequence[str], state: SearchState, candidates: Sequence[CandidateRecord],
    chosen: dict[Stage, str] | None = None,
) -> JudgeTask:  # fmt: skip
    return JudgeTask(
        conversation=state["conversation"],
        stage=stage if len(span) == 1 else None,
        chosen=_chosen_stages(state) if chosen is None else chosen,
        candidates=tuple(c["text"] for c in candidates),
        mean_logprobs=tuple(c["mean_logprob"] for c in candidates),
    )


def _room(state: SearchState, context: SearchContext) -> int | None:
    """New tokens the model's context leaves for the stages not chosen yet (None: unknown).

    The prompt counted is the request, the chosen stages, and the tags of every stage still to write.
    """
    chosen = _chosen_stages(state)
    ahead = {stage: chosen.get(stage, "") for stage in STAGES}
    return context.get_backend().tokens_left(state["conversation"], render_answer(ahead))


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


def _expand(stage: Stage, state: SearchState, context: SearchContext) -> Step[dict[str, Any]]:
    room = _room(state, context)
    if not state.get("steps"):
        _check_before_the_first_token(context, room)
    span = context.span(stage)
    started = time.perf_counter()
    if context.strategy == "retrace" and stage is Stage.REASONING and state.get("frontier"):
        pending, usage = yield from _expand_frontier(state, context, room)
    elif context.adaptive and context.width > 1:
        pending, usage = yield from _expand_in_rounds(stage, state, context, room)
    else:
        [samples] = yield SampleCall((_sample_request(stage, state, context, room),))
        pending, usage = {"candidates": [_candidate(span, s) for s in samples]}, _sampling_usage(samples)
    candidates = pending["candidates"]
    get_stream_writer()({"event": "candidates", "stage": stage.value, "candidates": candidates})
    expansion = Expansion(
        stage=stage.value,
        span=[s.value for s in span],
        sample_seconds=time.perf_counter() - started,
        **pending,  # type: ignore[typeddict-item]
    )
    return {"pending": expansion, "usage": usage}


def _expand_in_rounds(
    stage: Stage, state: SearchState, context: SearchContext, room: int | None
) -> Step[tuple[dict, Usage]]:
    """Adaptive width: ``adaptive_start`` candidates, then the rest only if they are not enough.

    The first round is enough when its candidates are all the same text, or when the
    judge scores one of them at least ``confidence`` (that verdict is kept for the judge).
    """
    span = context.span(stage)
    request = _sample_request(stage, state, context, room)
    first = replace(request, n=min(context.adaptive_start, request.n))
    [samples] = yield SampleCall((first,))
    usage = _sampling_usage(samples)
    candidates = [_candidate(span, s) for s in samples]
    if len(candidates) == request.n:
        return {"candidates": candidates, "stopped_early": None}, usage
    if len(candidates) > 1 and len({c["text"].strip() for c in candidates}) == 1:
        return {"candidates": candidates, "stopped_early": "agreement"}, usage
    if context.confidence is not None:
        task = _judge_task(stage, [s.value for s in span], state, candidates)
        verdict = yield from context.resolved_judge.select(task, context.get_backend())
        usage = add_usage(usage, _verdict_usage(verdict))
        if any(score is not None and score >= context.confidence for score in verdict.scores):
            kept = {"winner": verdict.winner, "scores": list(verdict.scores),
                    "comparisons": [vars(c) for c in verdict.comparisons],
                    "step_scores": step_scores_record(verdict.step_scores)}  # fmt: skip
            return {"candidates": candidates, "stopped_early": "confidence", "verdict": kept}, usage
    seed = None if request.seed is None else request.seed + _ROUND_SEED
    [more] = yield SampleCall((replace(request, n=request.n - first.n, seed=seed),))
    usage = add_usage(usage, _sampling_usage(more))
    return {"candidates": candidates + [_candidate(span, s) for s in more], "stopped_early": None}, usage


def _expand_frontier(
    state: SearchState, context: SearchContext, room: int | None
) -> Step[tuple[dict, Usage]]:
    """retrace, reasoning: ``candidates // keep`` continuations of each kept caption, in one call."""
    frontier = state["frontier"] or []
    chosen = _chosen_stages(state)
    per_caption = max(1, context.width // len(frontier))
    requests = tuple(
        replace(
            _sample_request(Stage.REASONING, state, context, room, {**chosen, Stage.CAPTION: caption}),
            n=per_caption,
        )
        for caption in frontier
    )
    results = yield SampleCall(requests)
    candidates: list[CandidateRecord] = []
    groups: list[list[int]] = []
    for caption, samples in zip(frontier, results):
        groups.append(list(range(len(candidates), len(candidates) + len(samples))))
        candidates += [CandidateRecord(**_candidate((Stage.REASONING,), s), follows=caption) for s in samples]
    usage = _sampling_usage([s for samples in results for s in samples])
    return {"candidates": candidates, "groups": groups}, usage


def _judge(stage: Stage, state: SearchState, context: SearchContext) -> Step[dict[str, Any]]:
    pending = state.get("pending")
    if not pending or pending["stage"] != stage.value:
        msg = f"judge_{stage.value} ran without candidates of its stage; the graph was entered mid-step."
        raise RuntimeError(msg)
    candidates = pending["candidates"]
    judge = context.resolved_judge if len(candidates) > 1 or pending.get("groups") else None
    started = time.perf_counter()
    if pending.get("groups"):
        verdict = yield from _judge_groups(stage, state, context, pending)
    elif kept := pending.get("verdict"):  # an adaptive first round the judge already scored
        comparisons = tuple(Comparison(**c) for c in kept["comparisons"])
        steps = tuple(
            None if found is None else tuple(StepScore(**s) for s in found)
            for found in kept.get("step_scores") or ()
        )
        verdict = Verdict(kept["winner"], comparisons, scores=tuple(kept["scores"]), step_scores=steps)
    elif judge is None:
        verdict = yield from finished(Verdict(0))
    else:
        task = _judge_task(stage, pending["span"], state, candidates)
        verdict = yield from judge.select(task, context.get_backend())
    step = StepRecord(
        stage=stage.value,
        span=pending["span"],
        candidates=candidates,
        winner=verdict.winner,
        judge=judge.name if judge else None,
        comparisons=[vars(c) for c in verdict.comparisons],
        scores=list(verdict.scores) if verdict.scores else None,
        sample_seconds=pending["sample_seconds"],
        judge_seconds=time.perf_counter() - started,
    )
    if "stopped_early" in pending:
        step["stopped_early"] = pending["stopped_early"]
    if any(found is not None for found in verdict.step_scores):
        step["step_scores"] = step_scores_record(verdict.step_scores)
    winner = candidates[verdict.winner]
    update: dict[str, Any] = {
        "chosen": {stage.value: "", **winner["stages"]},
        "pending": None,
        "usage": _verdict_usage(verdict),
    }
    if judge is not None:
        update["judge"] = context.resolved_judge.describe()
    if context.strategy == "retrace" and stage is Stage.CAPTION:
        step["kept"] = _kept(verdict, candidates, context.keep)
        update["frontier"] = [candidates[i]["stages"][stage.value] for i in step["kept"]]
    if pending.get("groups"):
        update |= _retrace_decision(state, context, step, verdict)
    get_stream_writer()({"event": "chosen", "stage": stage.value, "step": step, "judge": update.get("judge")})
    return {**update, "steps": [step]}


def step_scores_record(found: Sequence[tuple[StepScore, ...] | None]) -> list[list[StepScoreRecord] | None]:
    """A verdict's step scores as the record keeps them: ``{"text", "score"}`` per step."""
    return [
        None if steps is None else [StepScoreRecord(text=s.text, score=s.score) for s in steps]
        for steps in found
    ]


def _judge_groups(
    stage: Stage, state: SearchState, context: SearchContext, pending: Expansion
) -> Step[Verdict]:
    """Score each kept caption's reasoning candidates (after that caption); the best wins."""
    candidates = pending["candidates"]
    scores: list[float | None] = [None] * len(candidates)
    steps: list[tuple[StepScore, ...] | None] = [None] * len(candidates)
    comparisons: list[Comparison] = []
    prompt = written = calls = 0
    for group in pending.get("groups") or []:
        members = [candidates[i] for i in group]
        chosen = {**_chosen_stages(state), Stage.CAPTION: members[0]["follows"]}
        task = _judge_task(stage, pending["span"], state, members, chosen)
        verdict = yield from context.resolved_judge.score(task, context.get_backend())
        for i, score in zip(group, verdict.scores):
            scores[i] = score
        for i, found in zip(group, verdict.step_scores):
            steps[i] = found
        comparisons += [replace(c, first=group[c.first], second=group[c.second], winner=group[c.winner])
                        for c in verdict.comparisons]  # fmt: skip
        prompt, written, calls = (
            prompt + verdict.prompt_tokens,
            written + verdict.completion_tokens,
            calls + verdict.calls,
        )
    logprobs = [c["mean_logprob"] for c in candidates]
    winner = best_index(scores, logprobs)
    return Verdict(winner, tuple(comparisons), prompt, written, calls, tuple(scores), tuple(steps))


def _kept(verdict: Verdict, candidates: Sequence[CandidateRecord], keep: int) -> list[int]:
    """The best ``keep`` distinct candidates by score, best first (the winner when unscored)."""
    if not verdict.scores:
        return [verdict.winner]
    kept: list[int] = []
    for i in ranked(verdict.scores, [c["mean_logprob"] for c in candidates]):
        if all(candidates[i]["text"] != candidates[j]["text"] for j in kept):
            kept.append(i)
    return kept[:keep]


def _score(path: RetracePath) -> float:
    return float("-inf") if path["score"] is None else path["score"]


def _retrace_decision(
    state: SearchState, context: SearchContext, step: StepRecord, verdict: Verdict
) -> dict[str, Any]:
    """Keep this try's best reasoning, or go back to the caption (at most ``max_retraces`` times).

    A try passes when its ``keep``-th best score reaches the threshold: ``retrace_threshold``,
    or the mean + ``retrace_z`` x std of every reasoning score of this run so far. When the
    retraces run out, the best reasoning of all tries is chosen, with its caption.
    """
    progress = state.get("retrace") or RetraceProgress(attempts=0, scores=[], best=None)
    scores = [s for s in verdict.scores if s is not None]
    seen = progress["scores"] + scores
    ranked = sorted(scores, reverse=True)
    kth = ranked[min(context.keep, len(ranked)) - 1] if ranked else None
    threshold = context.retrace_threshold
    if threshold is None:
        threshold = statistics.fmean(seen) + context.retrace_z * statistics.pstdev(seen) if seen else 0.0
    passed = kth is None or kth >= threshold
    attempt = progress["attempts"] + 1
    winner = step["candidates"][step["winner"]]
    here = RetracePath(
        score=verdict.scores[step["winner"]] if verdict.scores else None,
        stages={"caption": winner["follows"], **winner["stages"]},
    )
    best = progress["best"]
    if best is None or _score(here) > _score(best):
        best = here
    retraced = not passed and attempt <= context.max_retraces
    step["retrace"] = RetraceAttempt(
        attempt=attempt, threshold=threshold, kth_score=kth, passed=passed, retraced=retraced
    )
    progress = RetraceProgress(attempts=attempt, scores=seen, best=best)
    if retraced:
        get_stream_writer()({"event": "retrace", "stage": Stage.REASONING.value, "retrace": step["retrace"]})
        earlier = {k: v for k, v in (state.get("chosen") or {}).items() if k == Stage.SUMMARY.value}
        return {"chosen": Overwrite(earlier), "frontier": None, "retrace": progress}
    chosen = here if passed else best
    return {"chosen": {Stage.REASONING.value: "", **chosen["stages"]}, "frontier": None, "retrace": progress}


StageLogic = Callable[[Stage, SearchState, SearchContext], Step[dict[str, Any]]]
ConversationOf = Callable[[Mapping[str, Any]], Conversation]
"""Reads the conversation from a graph's state (the default: its ``conversation`` key)."""
ContextOf = Callable[[Any], SearchContext]
"""Makes the search's context from a graph's runtime context (the default: it is one)."""


def _node(
    logic: StageLogic,
    stage: Stage,
    conversation_of: ConversationOf | None = None,
    context_of: ContextOf | None = None,
) -> RunnableLambda:
    """Wrap stage logic as a node that runs with the backend's sync or async methods."""

    def context() -> SearchContext:
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

    def search_state(state: Any) -> SearchState:
        if conversation_of is None:
            return state
        return {**state, "conversation": conversation_of(state)}  # type: ignore[typeddict-item]

    def run(state: SearchState) -> dict[str, Any]:
        ctx = context()
        backend = ctx.get_backend()
        return drive(logic(stage, search_state(state), ctx), backend)

    async def arun(state: SearchState) -> dict[str, Any]:
        ctx = context()
        # loading a model or decoding images blocks: keep it off the event loop
        backend = ctx.backend if ctx.backend is not None else await asyncio.to_thread(ctx.get_backend)
        prepared = (
            search_state(state) if conversation_of is None else await asyncio.to_thread(search_state, state)
        )
        return await adrive(logic(stage, prepared, ctx), backend)

    return RunnableLambda(run, afunc=arun, name=f"{logic.__name__.strip('_')}_{stage.value}")


def add_search_nodes(
    builder: StateGraph[Any, Any, Any, Any],
    *,
    after: str = END,
    conversation_of: ConversationOf | None = None,
    context_of: ContextOf | None = None,
) -> dict[str, str]:
    """Add the expand and judge nodes of every stage to ``builder``.

    Args:
        builder: a graph whose state has :class:`SearchState`'s search keys.
        after: where to go once every stage is chosen.
        conversation_of: reads the conversation from the state, for graphs that keep
            it elsewhere (e.g. derive it from ``messages``); None reads ``conversation``.
        context_of: makes the :class:`SearchContext` from the graph's runtime context, for
            graphs whose context is something else (e.g. a served client's); None takes it as it is.

    Returns:
        The path map of :func:`next_stage_node`, for the edge that enters the search.
    """
    routes = {f"expand_{s.value}": f"expand_{s.value}" for s in STAGES} | {END: after}
    for stage in STAGES:
        builder.add_node(f"expand_{stage.value}", _node(_expand, stage, conversation_of, context_of))
        builder.add_node(f"judge_{stage.value}", _node(_judge, stage, conversation_of, context_of))
        builder.add_edge(f"expand_{stage.value}", f"judge_{stage.value}")
        later = {
            k: v for k, v in routes.items() if k == END or STAGES.index(Stage(k[7:])) > STAGES.index(stage)
        }
        if stage is Stage.REASONING:  # strategy="retrace" goes back to sample captions again
            later[f"expand_{Stage.CAPTION.value}"] = f"expand_{Stage.CAPTION.value}"
        builder.add_conditional_edges(f"judge_{stage.value}", next_stage_node, later)  # type: ignore[arg-type]
    return routes


def build_graph(**compile_options: Any) -> Any:
    """Build and compile the search graph; ``compile_options`` go to ``compile()``.

    Pass ``checkpointer=`` to make runs resumable, ``interrupt_after=["judge_caption"]``
    to stop after a stage; see :func:`~langchain_llava_cot.state.checkpoint_serializer` for
    the checkpointer's serde.
    """
    builder = StateGraph(SearchState, context_schema=SearchContext)
    routes = add_search_nodes(builder)
    builder.add_conditional_edges(START, next_stage_node, routes)  # type: ignore[arg-type]
    return builder.compile(**compile_options)
