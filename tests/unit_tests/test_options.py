"""The search options: declared once, checked once, wherever they come from.

Every entry point (the chat model's constructor, per-call options, the graph's context,
the served graph's JSON context, the CLI) goes through :class:`SearchOptions`, so a bad
value fails the same way everywhere, before any model work.
"""

import math

import pytest
from fakes import SCRIPT, ScriptedBackend
from langchain_core.messages import HumanMessage

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot.deployment import Deployment
from langchain_llava_cot.options import (
    DEFAULT_JUDGE,
    MAX_RETRACES,
    SearchContext,
    SearchOptions,
)
from langchain_llava_cot.strategies import strategy_names

STRATEGIES = strategy_names()

MESSAGES = [HumanMessage("How many red circles?")]


def construct(**options):
    ChatLlavaCoT(backend=ScriptedBackend(SCRIPT), **options)


def per_call(**options):
    backend = ScriptedBackend(SCRIPT)
    llm = ChatLlavaCoT(backend=backend)
    try:
        llm.invoke(MESSAGES, **options)
    except Exception:
        assert not backend.sample_calls  # refused before any model work
        raise


def graph_context(**options):
    SearchContext(backend=ScriptedBackend(SCRIPT), **options)


def served_context(**options):
    Deployment(max_candidates=64).search_context(options)


ENTRY_POINTS = [construct, per_call, graph_context, served_context]

BAD_OPTIONS = [
    ({"temperature": math.inf}, "temperature must be a finite number"),
    ({"temperature": math.nan}, "temperature must be a finite number"),
    ({"temperature": 10**400}, "temperature must be a finite number"),
    ({"temperature": -1}, "temperature must be at least 0"),
    ({"top_p": 0}, "top_p must be above 0"),
    ({"candidates": True}, "candidates must be a whole number"),
    ({"candidates": 2.5}, "candidates must be a whole number"),
    ({"candidates": "4"}, "candidates must be a whole number"),
    ({"candidates": 0}, "candidates must be a whole number of at least 1"),
    ({"candidates": 65}, "above the cap of 64"),
    ({"adaptive": "false"}, "adaptive must be true or false"),
    ({"adaptive": 1}, "adaptive must be true or false"),
    ({"stop": [""]}, "stop holds an empty string"),
    ({"stop": "x"}, "stop must be a list of strings"),
    ({"max_tokens": 1}, "max_tokens must be a whole number of at least 4"),
    ({"seed": -1}, "seed must be a whole number of at least 0"),
    ({"seed": 2**64}, "seed must be a whole number of at least 0 and at most"),
    ({"strategy": "mcts"}, "Unknown strategy 'mcts'"),
    ({"judge": "oracle"}, "Unknown judge 'oracle'"),
    ({"max_stage_tokens": {"verdict": 3}}, "max_stage_tokens has unknown stage 'verdict'"),
    ({"max_stage_tokens": {"caption": 0}}, "must be a whole number of at least 1"),
    ({"max_stage_tokens": "lots"}, "max_stage_tokens must be"),
    ({"adaptive": True, "adaptive_start": 1}, "adaptive_start must be at least 2"),
    ({"adaptive": True, "strategy": "best_of_n"}, "adaptive=True is for strategy"),
    ({"strategy": "retrace", "candidates": 2, "keep": 3}, "keep=3 is more than candidates=2"),
    ({"strategy": "retrace", "max_retraces": MAX_RETRACES + 1}, f"at most {MAX_RETRACES}"),
    ({"strategy": "retrace", "judge": "pairwise"}, "does not score"),
    ({"confidence": 0.5, "judge": "pairwise", "adaptive": True}, "has none"),
    ({"retrace_z": math.inf}, "retrace_z must be a finite number"),
]


@pytest.mark.parametrize("entry", ENTRY_POINTS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(("options", "message"), BAD_OPTIONS, ids=lambda x: str(x)[:40])
def test_a_bad_option_fails_the_same_way_wherever_it_comes_from(entry, options, message):
    with pytest.raises(ValueError, match=message):
        entry(**options)


def test_a_human_judge_on_the_chat_model_says_at_once_what_it_needs():
    from langchain_llava_cot.judges import StageJudges

    for judge in ("human", StageJudges({}, default="human"), StageJudges({"caption": "human"})):
        with pytest.raises(ValueError, match="checkpointer"):
            construct(judge=judge)
        with pytest.raises(ValueError, match="checkpointer"):
            per_call(judge=judge)
    assert SearchContext(judge="human").asks_a_person  # the graph itself takes it


def test_a_backend_per_call_is_refused_with_what_to_do():
    with pytest.raises(TypeError, match="backend cannot change per call"):
        per_call(backend=object())


def test_the_graph_context_takes_only_a_real_backend():
    with pytest.raises(ValueError, match="backend must be a VLMBackend"):
        SearchContext(backend=object())


def test_unknown_options_are_named_with_the_accepted_ones():
    with pytest.raises(TypeError, match="Unknown option.*beam_width.*accepts.*candidates"):
        per_call(beam_width=3)
    with pytest.raises(ValueError, match="beam_width"):
        construct(beam_width=3)


@pytest.mark.parametrize("entry", [construct, per_call, graph_context], ids=lambda f: f.__name__)
def test_numpy_numbers_are_numbers(entry):
    numpy = pytest.importorskip("numpy")
    entry(candidates=numpy.int64(2), temperature=numpy.float32(0.5), seed=numpy.int32(3))


def test_the_chat_model_declares_no_search_option_of_its_own():
    """Every search option's default and description come from SearchOptions alone."""
    for name, field in SearchOptions.model_fields.items():
        inherited = ChatLlavaCoT.model_fields[name]
        assert inherited.default == field.default, name
        assert inherited.annotation == field.annotation, name
    assert ChatLlavaCoT.model_fields["judge"].default == DEFAULT_JUDGE
    assert issubclass(ChatLlavaCoT, SearchOptions) and issubclass(SearchContext, SearchOptions)
    assert all(field.description for field in SearchOptions.model_fields.values())


def test_per_call_options_merge_over_the_model_options_in_one_place():
    llm = ChatLlavaCoT(backend=ScriptedBackend(SCRIPT), strategy="retrace", keep=3, retrace_z=1.0)
    context = llm.search_context(candidates=6)
    assert (context.strategy, context.keep, context.retrace_z, context.candidates) == ("retrace", 3, 1.0, 6)
    assert llm.candidates == 4  # the model's own options are left as they were


def test_the_cli_flags_come_from_the_declaration():
    from langchain_llava_cot.cli import _parser

    ask = _parser().parse_args(["ask", "x.png", "q"])
    assert not set(SearchOptions.model_fields) & set(vars(ask))  # unset flags leave the defaults to it
    args = _parser().parse_args(
        [
            "ask",
            "x.png",
            "q",
            "--keep",
            "3",
            "--retrace-z",
            "0.5",
            "--no-adaptive",
            "--stop",
            "A",
            "--stop",
            "B",
        ]
    )
    assert (args.keep, args.retrace_z, args.adaptive, args.stop) == (3, 0.5, False, ["A", "B"])
    help_text = _parser()._subparsers._group_actions[0].choices["ask"].format_help()  # noqa: SLF001
    for name in SearchOptions.model_fields:
        assert "--" + name.replace("_", "-") in help_text, name


def test_the_eval_names_the_strategies_and_judges_the_options_know():
    from langchain_llava_cot.eval.strategies import JUDGES, parse_strategy, searches
    from langchain_llava_cot.judges import BuiltinJudge

    assert set(searches()) == set(STRATEGIES) - {"greedy"}
    assert set(JUDGES) == set(BuiltinJudge.__args__) - {"human"}
    with pytest.raises(ValueError, match="above the cap of 64"):
        parse_strategy("stage_beam:likelihood:65")


# --- random values of every type, at every entry point ----------------------------------------

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from langchain_llava_cot.cli import one_line  # noqa: E402

# No subnormal floats: the demo's training tests set torch's flush-denormal mode for the whole
# process, and Hypothesis cannot draw subnormals after that.
ANYTHING = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 80),
    st.integers(),
    st.floats(allow_subnormal=False),
    st.sampled_from([math.inf, -math.inf, math.nan, 0.0, 1e-300, 2**64, 10**400]),
    st.text(max_size=8),
    st.sampled_from(STRATEGIES + ("greedy ", "false", "true", "human", "pairwise", "verifier", "vote", "4")),
    st.lists(st.text(max_size=3) | st.integers(), max_size=3),
    st.dictionaries(
        st.sampled_from(["summary", "caption", "reasoning", "conclusion", "x"]), st.integers(-1, 9)
    ),
    st.builds(object),
)
"""Values of every type a caller or a JSON client could send, and a few that look right but are not."""

OPTION_NAMES = (*SearchOptions.model_fields, "beam_width")
RANDOM_OPTIONS = st.dictionaries(st.sampled_from(OPTION_NAMES), ANYTHING, max_size=4)
FAST = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])
"""Bounded, so they run in every ``make test``; search longer with ``--hypothesis-seed`` and more examples."""


def a_clear_error_or_an_answer(attempt, options):
    """A bad value is a ValueError or TypeError that names what was wrong; a good one runs."""
    try:
        return attempt()
    except (ValueError, TypeError) as error:
        message = one_line(error)
        assert any(name in message for name in options) or "option" in message, message
        assert "Traceback" not in message and len(message) < 600, message
        return None


@FAST
@given(RANDOM_OPTIONS)
def test_random_options_per_call_give_a_clear_error_or_an_answer(options):
    backend = ScriptedBackend(SCRIPT)
    llm = ChatLlavaCoT(backend=backend, max_stage_tokens=8)
    message = a_clear_error_or_an_answer(lambda: llm.invoke(MESSAGES, **options), options)
    if message is None:
        assert not backend.sample_calls  # refused before any model work
    else:
        assert isinstance(message.content, str) and message.response_metadata["llava_cot"]["steps"]


@FAST
@given(RANDOM_OPTIONS)
def test_random_options_at_construction_give_a_clear_error_or_a_model(options):
    a_clear_error_or_an_answer(lambda: ChatLlavaCoT(backend=ScriptedBackend(SCRIPT), **options), options)


@FAST
@given(RANDOM_OPTIONS)
def test_random_json_contexts_of_the_served_graph_give_a_clear_error_or_a_search(options):
    deployment = Deployment(models=("scripted",), make_backend=lambda name: ScriptedBackend(SCRIPT))
    context = a_clear_error_or_an_answer(lambda: deployment.search_context(options), options)
    if context is not None:
        assert context.candidates <= deployment.max_candidates and context.backend is not None
