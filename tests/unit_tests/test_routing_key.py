"""Every request of one question's search carries one stable routing key, in the body and a header."""

import httpx

from langchain_llava_cot.backends.base import ChoiceRequest, SampleRequest
from langchain_llava_cot.backends.openai.asking import (
    choice_payload,
    how_to_ask,
    routing_key,
    sample_payloads,
)
from langchain_llava_cot.backends.openai.capabilities import ServerCapabilities
from langchain_llava_cot.backends.openai.transport import ROUTING_HEADER, Post, post_within
from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.demo.dataset import get_example

CAPS = ServerCapabilities(n=True, stop=True, logprobs=True, top_logprobs=True, continuation=True, images=True)


def _question(index: int) -> Conversation:
    return get_example("test", index).conversation()


def test_a_questions_candidates_and_verdicts_share_one_key_and_questions_differ():
    question = _question(0)
    judge = question.with_user_turn("Which response is better? Response 1: ... Response 2: ...")
    keys = set()
    for prefix in ("<SUMMARY>", "<SUMMARY> plan </SUMMARY>\n\n<CAPTION>"):
        request = SampleRequest(
            question, prefix, n=4, stop=("</SUMMARY>",), max_new_tokens=8, temperature=0.6
        )
        keys |= {
            p["user"] for p in sample_payloads("m", request, how_to_ask(question, prefix, (), CAPS), CAPS)
        }
    keys.add(choice_payload("m", ChoiceRequest(judge, "The better response is", ("1", "2")))["user"])
    assert keys == {routing_key(question)}
    assert routing_key(question) == routing_key(_question(0))  # stable: the same on every run
    assert routing_key(_question(1)) != routing_key(question)
    text_only = Conversation((Turn("user", "Hello?"),))
    assert routing_key(text_only).startswith("llava-cot-") and routing_key(text_only) != routing_key(question)


def test_the_key_also_travels_as_a_header():
    seen = []

    def reply(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get(ROUTING_HEADER))
        return httpx.Response(200, stream=httpx.ByteStream(b"{}"))

    with httpx.Client(base_url="http://server/v1", transport=httpx.MockTransport(reply)) as client:
        post_within(client, Post({"model": "m", "user": "llava-cot-0123456789abcdef"}), 5)
        post_within(client, Post({"model": "m"}), 5)
    assert seen == ["llava-cot-0123456789abcdef", None]
