"""Every strategy where users put a chat model: in a chain, in an agent, and at its caps.

A LangChain chain passes its recursion limit (25) into the graph it calls; the search
must set the limit it needs itself. The scripted backend stands in for the model: what
is checked is the graph's steps and the options, not the answers' quality.
"""

import pytest
from fakes import ScriptedBackend, says_three
from langchain_core.messages import HumanMessage
from langchain_core.runnables import RunnableLambda

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot.options import MAX_CANDIDATES, MAX_RETRACES
from langchain_llava_cot.stages import Stage

WHOLE = (
    " two </SUMMARY>\n\n<CAPTION> c </CAPTION>\n\n<REASONING> r </REASONING>\n\n<CONCLUSION> 3 </CONCLUSION>"
)
SCRIPT = {
    Stage.SUMMARY: [WHOLE],  # cut at </SUMMARY> by stage-wise searches, whole for best_of_n and vote
    Stage.CAPTION: [" three red circles </CAPTION>", " two red circles </CAPTION>"],
    Stage.REASONING: [" so three </REASONING>", " so two </REASONING>"],
    Stage.CONCLUSION: [" 3 </CONCLUSION>", " 2 </CONCLUSION>"],
}

NEVER_GOOD_ENOUGH = {"retrace_threshold": 1e9}
"""Every reasoning falls short, so retrace goes back as often as it may."""

SEARCHES = {
    "greedy": {"strategy": "greedy"},
    "best_of_n": {"strategy": "best_of_n"},
    "vote": {"strategy": "vote"},
    "stage_beam": {"strategy": "stage_beam"},
    "stage_beam+adaptive": {"strategy": "stage_beam", "adaptive": True},
    "retrace": {"strategy": "retrace", "max_retraces": 5, **NEVER_GOOD_ENOUGH},
    "retrace+adaptive": {"strategy": "retrace", "adaptive": True, "max_retraces": 5, **NEVER_GOOD_ENOUGH},
}
AT_THE_CAPS = {"candidates": MAX_CANDIDATES, "max_retraces": MAX_RETRACES}

MESSAGES = [HumanMessage("How many red circles?")]


def model(**options):
    backend = ScriptedBackend(SCRIPT, check=says_three)
    return ChatLlavaCoT(backend=backend, judge="verifier", seed=0, **options)


def assert_answered(message, options):
    record = message.response_metadata["llava_cot"]
    assert message.content == "3"
    assert set(record["chosen"]) == {"summary", "caption", "reasoning", "conclusion"}
    tries = [s["retrace"] for s in record["steps"] if "retrace" in s]
    if options.get("strategy") == "retrace":
        assert len(tries) == options["max_retraces"] + 1  # it went back every time it was allowed


@pytest.mark.parametrize("options", SEARCHES.values(), ids=SEARCHES.keys())
def test_every_strategy_runs_inside_a_chain(options):
    chain = RunnableLambda(lambda messages: messages) | model(**options)
    assert_answered(chain.invoke(MESSAGES), options)


@pytest.mark.parametrize("options", SEARCHES.values(), ids=SEARCHES.keys())
async def test_every_strategy_runs_inside_an_async_chain(options):
    chain = RunnableLambda(lambda messages: messages) | model(**options)
    assert_answered(await chain.ainvoke(MESSAGES), options)


@pytest.mark.parametrize("options", SEARCHES.values(), ids=SEARCHES.keys())
def test_every_strategy_runs_inside_an_agent(options):
    from langchain.agents import create_agent

    agent = create_agent(model(**options), tools=[])
    state = agent.invoke({"messages": MESSAGES})
    assert_answered(state["messages"][-1], options)


@pytest.mark.parametrize("options", SEARCHES.values(), ids=SEARCHES.keys())
def test_every_strategy_runs_at_its_caps_inside_a_chain(options):
    options = {**options, **AT_THE_CAPS} if options.get("strategy") == "retrace" else options
    options = {**options, "candidates": MAX_CANDIDATES} if options.get("strategy") != "greedy" else options
    chain = RunnableLambda(lambda messages: messages) | model(**options)
    message = chain.invoke(MESSAGES)
    assert_answered(message, options)
    steps = message.response_metadata["llava_cot"]["steps"]
    if options.get("strategy") != "greedy" and not options.get("adaptive"):
        assert max(len(s["candidates"]) for s in steps) == MAX_CANDIDATES
