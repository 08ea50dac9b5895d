"""ChatModelBackend with LangChain's fake chat model: prompts, drift repair, n, usage, callbacks."""

from __future__ import annotations

import base64
import io
import threading
import time
from typing import Any

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.runnables import RunnableLambda
from PIL import Image

from langchain_llava_cot._calls import drive
from langchain_llava_cot.backends.base import SampleRequest
from langchain_llava_cot.backends.langchain import ChatModelBackend
from langchain_llava_cot.backends.stage_asking import StageAsk, extract_stages, read_prefix
from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.judges import JudgeTask, PairwiseJudge, VerifierJudge
from langchain_llava_cot.stages import Stage

pytestmark = pytest.mark.timeout(30)


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16), (255, 0, 0)).save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE = _png()
CONVERSATION = Conversation((Turn("user", "How many squares?", (IMAGE,)),))
CAPTION_PREFIX = "<SUMMARY> Count the squares. </SUMMARY>\n\n<CAPTION>"


class Recorder(BaseCallbackHandler):
    """Records the messages each chat model run starts with."""

    def __init__(self) -> None:
        self.prompts: list[list[BaseMessage]] = []

    def on_chat_model_start(self, serialized: Any, messages: list[list[BaseMessage]], **kwargs: Any) -> None:
        self.prompts.extend(messages)


def fake(*replies: AIMessage | str) -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter(replies))


def caption_request(**options: Any) -> SampleRequest:
    return SampleRequest(CONVERSATION, CAPTION_PREFIX, stop=("</CAPTION>",), **options)


class Recording(GenericFakeChatModel):
    """The fake chat model, keeping the messages it was given."""

    received: list[list[BaseMessage]] = []

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.received.append(messages)
        return super()._generate(messages, *args, **kwargs)


def test_stage_prompt_has_the_image_block_question_and_chosen_stages() -> None:
    model = Recording(messages=iter(["<CAPTION> Two red squares. </CAPTION>"]), received=[])
    backend = ChatModelBackend(model)
    recorder = Recorder()
    # Callbacks reach the chat model from the caller's runnable context, untouched.
    run = RunnableLambda(lambda requests: backend.sample(requests))
    [[sample]] = run.invoke([caption_request()], config={"callbacks": [recorder]})

    assert sample.text == " Two red squares. " and sample.finish_reason == "stop"
    [[message]] = model.received
    image, text = message.content
    assert image == {"type": "image", "base64": base64.b64encode(IMAGE).decode(), "mime_type": "image/png"}
    assert text["text"].startswith("How many squares?")
    assert "<SUMMARY> Count the squares. </SUMMARY>" in text["text"]
    assert "only the caption stage, as <CAPTION> ... </CAPTION>" in text["text"]
    [[traced]] = recorder.prompts
    assert traced.content[0]["image_url"]["url"].startswith("data:image/png;base64,")


@pytest.mark.parametrize(
    ("reply", "expected", "repaired"),
    [
        ("<CAPTION> Two squares. </CAPTION>", "Two squares.", False),
        ("Two squares.", "Two squares.", True),  # untagged text taken as the stage
        ("Sure! <CAPTION> Two squares.", "Two squares.", True),  # chatter dropped, close tag missing
        ("<caption> Two squares. </caption>", "Two squares.", True),  # tag case repaired
        (  # a whole four-stage answer: the asked stage is taken from it
            "<SUMMARY> x </SUMMARY> <CAPTION> Two squares. </CAPTION> <REASONING> r </REASONING>",
            "Two squares.",
            True,
        ),
    ],
)
def test_drift_is_repaired(reply: str, expected: str, repaired: bool) -> None:
    backend = ChatModelBackend(fake(reply))
    [[sample]] = backend.sample([caption_request()])
    assert sample.text.strip() == expected
    ask = read_prefix(CAPTION_PREFIX, ("</CAPTION>",))
    assert ask is not None and (extract_stages(reply, ask).repair is not None) == repaired
    assert bool(sample.repairs) == repaired  # and the sample says so


def test_a_repaired_reply_says_so_in_the_candidates_problems() -> None:
    from langchain_llava_cot.graph import build_graph
    from langchain_llava_cot.options import SearchContext

    replies = ["<SUMMARY> count </SUMMARY>", "Two squares.", "<REASONING> so 2 </REASONING>", "2"]
    backend = ChatModelBackend(fake(*replies))
    state = build_graph().invoke(
        {"conversation": CONVERSATION}, context=SearchContext(backend=backend, strategy="greedy")
    )
    problems = [step["candidates"][0]["problems"] for step in state["steps"]]
    assert problems[0] == [] and problems[2] == []
    assert problems[1] == ["no <CAPTION> tag; the whole reply is the stage"]
    assert state["chosen"]["caption"] == "Two squares."


def test_whole_answer_request_keeps_every_stage_after_the_first_tag() -> None:
    reply = "<SUMMARY> s </SUMMARY>\n\n<CAPTION> c </CAPTION>\n\n<REASONING> r </REASONING>\n\n"
    reply += "<CONCLUSION> 2 </CONCLUSION>"
    backend = ChatModelBackend(fake(reply))
    request = SampleRequest(CONVERSATION, "<SUMMARY>", stop=("</CONCLUSION>",))
    [[sample]] = backend.sample([request])
    assert sample.text.strip().startswith("s </SUMMARY>") and sample.text.strip().endswith("<CONCLUSION> 2")
    assert read_prefix("<SUMMARY>", ("</CONCLUSION>",)) == StageAsk({}, Stage.SUMMARY, Stage.CONCLUSION)


def test_n_candidates_run_concurrently() -> None:
    in_flight = max_in_flight = 0
    lock = threading.Lock()

    class Slow(GenericFakeChatModel):
        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            nonlocal in_flight, max_in_flight
            with lock:
                in_flight += 1
                max_in_flight = max(max_in_flight, in_flight)
            time.sleep(0.1)
            with lock:
                in_flight -= 1
            return super()._generate(*args, **kwargs)

    replies = iter([f"<CAPTION> c{i} </CAPTION>" for i in range(6)])
    backend = ChatModelBackend(Slow(messages=replies), max_concurrency=3)
    [samples, [single]] = backend.sample([caption_request(n=5), caption_request()])
    assert len(samples) == 5 and len({s.text for s in [*samples, single]}) == 6
    assert max_in_flight == 3


async def test_async_n_and_usage_and_logprobs_flow_through() -> None:
    logprobs = {
        "content": [
            {"token": "<CAPTION>", "logprob": -0.01},
            {"token": " Two", "logprob": -0.2},
            {"token": " squares", "logprob": -0.3},
            {"token": " </CAPTION>", "logprob": -0.05},
        ]
    }
    usage = {"input_tokens": 40, "output_tokens": 4, "total_tokens": 44}
    reply = AIMessage(
        "<CAPTION> Two squares </CAPTION>",
        usage_metadata=usage,
        response_metadata={"logprobs": logprobs, "finish_reason": "stop"},
    )
    backend = ChatModelBackend(fake(reply, reply))
    [samples] = await backend.asample([caption_request(n=2)])
    assert [s.text.strip() for s in samples] == ["Two squares", "Two squares"]
    assert samples[0].prompt_tokens == 40 and samples[0].completion_tokens == 4
    assert samples[0].token_logprobs == (-0.2, -0.3)


def test_length_finish_reason_and_plain_prompts() -> None:
    cut = AIMessage("<CAPTION> Two squ", response_metadata={"done_reason": "length"})
    backend = ChatModelBackend(fake(cut, "The better response is 2."))
    [[sample]] = backend.sample([caption_request()])
    assert sample.finish_reason == "length" and sample.text.strip() == "Two squ"
    # The pairwise judge sends prefix "" requests; the verdict comes back whole and is parsed.
    task = JudgeTask(CONVERSATION, Stage.CAPTION, {}, ("one", "two"))
    verdict = drive(PairwiseJudge(seed=0).select(task, backend), backend)
    assert verdict.comparisons[0].method == "generated"
    assert not backend.supports_choice


def test_verifier_verdicts_are_generated_by_the_chat_model_and_parsed() -> None:
    backend = ChatModelBackend(fake("The candidate is wrong.", "The candidate is right."))
    task = JudgeTask(CONVERSATION, Stage.CAPTION, {}, ("one", "two"))
    verdict = drive(VerifierJudge().select(task, backend), backend)
    assert sorted(verdict.scores) == [-1.0, 1.0] and verdict.scores[verdict.winner] == 1.0
    assert {c.method for c in verdict.comparisons} == {"generated"}


def test_model_name_comes_from_the_chat_model() -> None:
    class Named(GenericFakeChatModel):
        model: str = "llava:7b"

    assert ChatModelBackend(Named(messages=iter(()))).model_name == "llava:7b"
    assert ChatModelBackend(fake()).model_name == "generic-fake-chat-model"
    with pytest.raises(ValueError, match="max_concurrency"):
        ChatModelBackend(fake(), max_concurrency=0)
