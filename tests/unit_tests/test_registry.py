"""A strategy of the user's own: registered once, accepted wherever a strategy is named."""

from collections import Counter

import pytest
from fakes import SCRIPT, ScriptedBackend
from langchain_core.messages import HumanMessage

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.deployment import ClientContext, Deployment
from langchain_llava_cot.graph import build_graph, settled
from langchain_llava_cot.judges import Verdict
from langchain_llava_cot.options import SearchContext
from langchain_llava_cot.strategies import Judged, get_strategy, register_strategy, registry, strategy_names
from langchain_llava_cot.strategies.stage_beam import StageBeam

CONVERSATION = Conversation((Turn("user", "How many red circles?"),))
AGREEING = {stage: [texts[0], texts[0], *texts[1:]] for stage, texts in SCRIPT.items()}
"""Each stage's first continuation twice, then the others: the first is the majority."""


class StageMajority(StageBeam):
    """N candidates per stage; keep the text most of them wrote (no judge, no model call)."""

    name = "stage_majority"
    adaptive = False

    def judge(self, stage, state, context, pending):
        texts = [c["text"] for c in pending["candidates"]]
        shares = tuple(Counter(texts)[t] / len(texts) for t in texts)
        winner = max(range(len(texts)), key=lambda i: (shares[i], -i))
        return Judged(Verdict(winner, scores=shares), None, settled(stage, pending["candidates"][winner]))


class Wide(StageBeam):
    """Twice the candidates of stage_beam."""

    name = "wide"

    def width(self, options):
        return 2 * options.candidates


@pytest.fixture(autouse=True)
def own_registry(monkeypatch):
    """Each test registers into a copy of the registry, so none leaks into another test."""
    monkeypatch.setattr(registry, "_registered", dict(registry._registered))  # noqa: SLF001


def test_a_registered_strategy_runs_in_the_graph_and_the_chat_model():
    register_strategy(StageMajority())
    backend = ScriptedBackend(AGREEING)
    llm = ChatLlavaCoT(backend=backend, strategy="stage_majority", candidates=4)
    answer = llm.invoke([HumanMessage("How many red circles?")])
    steps = answer.response_metadata["llava_cot"]["steps"]
    assert answer.content == "3"
    assert [s["judge"] for s in steps] == [None] * 4 and not backend.choice_calls
    caption = steps[1]
    assert caption["candidates"][caption["winner"]]["text"] == "two red circles"
    assert caption["scores"] == [0.5, 0.5, 0.25, 0.25]


def test_a_registered_strategy_is_accepted_wherever_a_strategy_is_named():
    register_strategy(Wide())
    assert "wide" in strategy_names() and get_strategy("wide").name == "wide"
    backend = ScriptedBackend(SCRIPT)
    context = SearchContext(backend=backend, strategy="wide", candidates=3)
    assert context.width == 6
    build_graph().invoke({"conversation": CONVERSATION}, context=context)
    assert [call[0].n for call in backend.sample_calls] == [6, 6, 6, 6]

    from langchain_llava_cot.cli import _parser
    from langchain_llava_cot.eval.strategies import parse_strategy
    from langchain_llava_cot.server.model_names import listed_models, search_of

    assert _parser().parse_args(["ask", "x.png", "q", "--strategy", "wide"]).strategy == "wide"
    assert parse_strategy("wide+adaptive:likelihood:4").adaptive
    assert "wide@demo" in listed_models("demo") and search_of("wide-8@demo", "demo")["strategy"] == "wide"
    served = Deployment(models=("scripted",), make_backend=lambda name: ScriptedBackend(SCRIPT))
    assert served.search_context({"strategy": "wide"}).strategy == "wide"
    assert "wide" in ClientContext.model_json_schema()["properties"]["strategy"]["enum"]


def test_a_strategy_name_must_be_new_and_plain():
    register_strategy(Wide())
    register_strategy(get_strategy("wide"))  # the same one again: nothing changes
    with pytest.raises(ValueError, match="registered already; pass replace=True"):
        register_strategy(Wide())
    register_strategy(Wide(), replace=True)

    class Beam(StageBeam):
        name = "stage_beam"

    with pytest.raises(ValueError, match="is a built-in strategy"):
        register_strategy(Beam())

    class Spaced(StageBeam):
        name = "my search"

    with pytest.raises(ValueError, match="plain identifier"):
        register_strategy(Spaced())
    with pytest.raises(TypeError, match="SearchStrategy instance"):
        register_strategy(Wide)
    with pytest.raises(ValueError, match="Unknown strategy 'nope'"):
        SearchContext(backend=ScriptedBackend(SCRIPT), strategy="nope")
