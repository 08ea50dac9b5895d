"""Backend requests check themselves, so no backend ever receives a senseless one."""

import pytest

from langchain_llava_cot.backends.base import ChoiceRequest, SampleRequest
from langchain_llava_cot.conversation import Conversation, Turn

CONVERSATION = Conversation((Turn("user", "How many?"),))


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"n": 0}, "n must be at least 1"),
        ({"max_new_tokens": 0}, "max_new_tokens must be at least 1"),
        ({"temperature": -0.1}, "temperature must be >= 0"),
        ({"top_p": 0.0}, r"top_p must be in \(0, 1\]"),
        ({"top_p": 1.5}, r"top_p must be in \(0, 1\]"),
        ({"stop": ("</CAPTION>", "")}, "empty string"),
    ],
)
def test_a_senseless_sample_request_fails_where_it_is_made(options, message):
    with pytest.raises(ValueError, match=message):
        SampleRequest(CONVERSATION, prefix="", **options)


def test_sensible_requests_are_made():
    request = SampleRequest(
        CONVERSATION, prefix="<SUMMARY>", n=4, stop=("</SUMMARY>",), temperature=0.6, top_p=1.0
    )
    assert request.n == 4
    assert ChoiceRequest(CONVERSATION, prefix="The better response is").options == ("1", "2")


def test_a_choice_needs_options():
    with pytest.raises(ValueError, match="at least one option"):
        ChoiceRequest(CONVERSATION, prefix="", options=())
