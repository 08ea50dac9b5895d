"""Reading a server's reply: every malformed reply is a ServerError naming the server, never a crash.

The readers are pure functions of the JSON a server sent, so they are tested here on
hand-made replies, and with Hypothesis on random JSON of every shape.
"""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from langchain_llava_cot.backends.base import ChoiceRequest, ChoiceResult, Sample, SampleRequest
from langchain_llava_cot.backends.openai.asking import Ask
from langchain_llava_cot.backends.openai.capabilities import ServerCapabilities, _continued, probe_plan
from langchain_llava_cot.backends.openai.errors import ServerError
from langchain_llava_cot.backends.openai.replies import choice_from_reply, samples_from_reply
from langchain_llava_cot.backends.openai.transport import Posts
from langchain_llava_cot.conversation import Conversation, Turn

SERVER = "http://127.0.0.1:9/v1"
CONVERSATION = Conversation((Turn("user", "How many squares?"),))
REQUEST = SampleRequest(CONVERSATION, "<SUMMARY> s </SUMMARY>\n\n<CAPTION>", stop=("</CAPTION>",))
CONTINUE = Ask([], "continue", prefix=REQUEST.prefix)
CHOICE = ChoiceRequest(CONVERSATION, "The better response is", options=(" 1", " 2"))


def reply(content="two squares", **extra):
    choice = {"message": {"role": "assistant", "content": content}, "finish_reason": "stop", **extra}
    return {"choices": [choice], "usage": {"prompt_tokens": 12, "completion_tokens": 3}}


def test_a_well_formed_reply_is_read():
    [sample] = samples_from_reply(REQUEST, CONTINUE, reply(), server=SERVER)
    assert (sample.text, sample.finish_reason, sample.prompt_tokens, sample.completion_tokens) == (
        "two squares",
        "stop",
        12,
        3,
    )


def test_content_as_text_parts_is_read_as_its_text():
    parts = [{"type": "text", "text": "two "}, {"type": "text", "text": "squares"}]
    [sample] = samples_from_reply(REQUEST, CONTINUE, reply(parts), server=SERVER)
    assert sample.text == "two squares"


@pytest.mark.parametrize(
    ("bad", "what"),
    [
        ([reply()], "is a JSON list, not an object"),
        ("OK", "is a JSON str, not an object"),
        ({"choices": []}, "has no choices"),
        ({"choices": ["two squares"]}, "has a choice that is not an object"),
        ({"choices": [{"message": "two squares"}]}, "has a message that is not an object"),
        (reply([{"type": "image_url", "image_url": {}}]), "neither text nor a list of text parts"),
        (reply(42), "neither text nor a list of text parts"),
        ({**reply(), "usage": {"prompt_tokens": "n/a"}}, "counts usage.prompt_tokens as 'n/a'"),
        ({**reply(), "usage": {"completion_tokens": -3}}, "counts usage.completion_tokens as -3"),
        ({**reply(), "usage": [12, 3]}, "has a usage that is not an object"),
        (
            reply(logprobs={"content": [{"token": "x", "logprob": "low"}]}),
            "log-probability 'low' that is not a number",
        ),
        (reply(logprobs={"content": "x"}), "not a list of objects"),
        (reply(logprobs=[0.5]), "not an object"),
    ],
)
def test_a_malformed_reply_is_a_server_error_naming_the_server_and_the_field(bad, what):
    with pytest.raises(ServerError, match=what) as error:
        samples_from_reply(REQUEST, CONTINUE, bad, server=SERVER)
    assert SERVER in str(error.value)


def test_a_malformed_choice_reply_is_a_server_error_too():
    top = {"content": [{"token": " 1", "logprob": -0.1, "top_logprobs": [{"token": " 2", "logprob": "?"}]}]}
    with pytest.raises(ServerError, match=f"{SERVER}.*log-probability '\\?' that is not a number"):
        choice_from_reply(CHOICE, reply(logprobs=top), server=SERVER)
    good = {"content": [{"token": " 1", "logprob": -0.1, "top_logprobs": [{"token": " 2", "logprob": -2.0}]}]}
    result = choice_from_reply(CHOICE, reply(logprobs=good), server=SERVER)
    assert result.logprobs == (float("-inf"), -2.0) and result.prompt_tokens == 12


def test_a_reply_that_does_not_begin_with_the_asked_prefix_says_so():
    fresh = Ask([], "fresh", prefix="The better response is")
    [kept] = samples_from_reply(REQUEST, fresh, reply("The better response is 2"), server=SERVER)
    [taken] = samples_from_reply(REQUEST, fresh, reply("Response 2, clearly."), server=SERVER)
    assert kept.text.strip() == "2" and kept.repairs == ()
    assert taken.text == "Response 2, clearly." and taken.repairs == (
        "the reply did not begin with 'The better response is' as asked; the whole reply is kept",
    )


def usage(prompt_tokens):
    return {"choices": [{"message": {"content": "OK"}}], "usage": {"prompt_tokens": prompt_tokens}}


@pytest.mark.parametrize(
    ("alone", "used", "full", "continues"),
    [
        (10, 12, 15, True),  # vLLM: continued is shorter than the finished turn
        (10, 12, 12, True),  # llama.cpp: always continues, "OK" is two tokens
        (10, 10, 10, False),  # a constant count tells nothing
        (10, 11, 10, False),  # the finished turn no longer than the user turn: counts do not grow
        (10, "12", 15, False),
        (10, True, 15, False),
    ],
)
def test_the_probe_takes_only_prompt_counts_that_show_a_continuation(alone, used, full, continues):
    assert _continued(usage(alone), usage(used), usage(full)) is continues


# --- random replies of every shape ------------------------------------------------------------

# No subnormal floats: the demo's training tests set torch's flush-denormal mode for the whole
# process, and Hypothesis cannot draw subnormals after that.
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_subnormal=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=6,
)
"""Any JSON value (and the floats JSON cannot hold: servers' parsers let them through)."""

FIELD_VALUES = JSON | st.sampled_from(["n/a", [], {}, -1, 2**70, 10**400, float("nan"), float("-inf")])


@st.composite
def plausible_replies(draw):
    """Replies shaped like the protocol, with any field replaced by anything."""
    choice = {
        "message": {"role": "assistant", "content": draw(st.text(max_size=40) | FIELD_VALUES)},
        "finish_reason": draw(st.sampled_from(["stop", "length", None]) | FIELD_VALUES),
        "logprobs": draw(
            st.none()
            | st.fixed_dictionaries(
                {
                    "content": st.lists(
                        st.fixed_dictionaries(
                            {
                                "token": st.text(max_size=4) | FIELD_VALUES,
                                "logprob": st.floats(max_value=0, allow_subnormal=False) | FIELD_VALUES,
                                "top_logprobs": st.lists(
                                    st.fixed_dictionaries({"token": FIELD_VALUES, "logprob": FIELD_VALUES}),
                                    max_size=3,
                                )
                                | FIELD_VALUES,
                            }
                        )
                        | FIELD_VALUES,
                        max_size=4,
                    )
                    | FIELD_VALUES
                }
            )
            | FIELD_VALUES
        ),
    }
    usage = {
        "prompt_tokens": draw(st.integers(0, 99) | FIELD_VALUES),
        "completion_tokens": draw(FIELD_VALUES),
    }
    whole = {"choices": draw(st.sampled_from([[choice], [choice, choice]]) | FIELD_VALUES), "usage": usage}
    return draw(st.sampled_from([whole]) | FIELD_VALUES)


ASKS = st.sampled_from(
    [
        CONTINUE,
        Ask([], "fresh"),
        Ask([], "fresh", prefix="The better response is"),
    ]
)


def read_or_server_error(read):
    try:
        return read()
    except ServerError as error:
        assert str(error).startswith(f"The server at {SERVER} sent a reply that ")
        json.dumps(str(error))  # one plain message
        return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plausible_replies(), ASKS)
def test_any_reply_gives_samples_or_a_server_error(any_reply, ask):
    samples = read_or_server_error(lambda: samples_from_reply(REQUEST, ask, any_reply, server=SERVER))
    if samples is not None:
        assert samples and all(isinstance(s, Sample) for s in samples)
        assert all(isinstance(s.text, str) and s.completion_tokens >= 0 for s in samples)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(plausible_replies())
def test_any_reply_gives_choice_scores_or_a_server_error(any_reply):
    result = read_or_server_error(lambda: choice_from_reply(CHOICE, any_reply, server=SERVER))
    if result is not None:
        assert isinstance(result, ChoiceResult) and len(result.logprobs) == len(CHOICE.options)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(plausible_replies() | JSON, min_size=12, max_size=12))
def test_the_probe_reads_any_replies_into_capabilities(replies):
    """Probe replies are never trusted either: odd ones mean a feature is off, not a crash."""
    plan = probe_plan("m")
    sent = iter(replies)
    posts = next(plan)
    try:
        while True:
            assert isinstance(posts, Posts)
            posts = plan.send([next(sent) for _ in posts.payloads])
    except StopIteration as done:
        assert isinstance(done.value, ServerCapabilities)
