"""Backend calls as values: one generator of search logic, driven sync or async."""

import asyncio
import threading

import pytest

from langchain_llava_cot._calls import ChoiceCall, FunctionCall, SampleCall, adrive, drive, finished
from langchain_llava_cot.backends.base import ChoiceRequest, ChoiceResult, Sample, SampleRequest, VLMBackend
from langchain_llava_cot.conversation import Conversation, Turn

CONVERSATION = Conversation((Turn("user", "How many?"),))


class Recording(VLMBackend):
    """Answers every call, and says which method answered it."""

    supports_choice = True

    def __init__(self, name: str) -> None:
        self.name, self.calls = name, []

    def sample(self, requests):
        self.calls.append("sample")
        return [[Sample(f"{self.name}:{r.prefix}", "stop")] for r in requests]

    async def asample(self, requests):
        self.calls.append("asample")
        return [[Sample(f"{self.name}:{r.prefix}", "stop")] for r in requests]

    def choose(self, requests):
        self.calls.append("choose")
        return [ChoiceResult((-0.1, -2.0)) for _ in requests]


def logic(other: VLMBackend | None = None):
    [[sampled]] = yield SampleCall((SampleRequest(CONVERSATION, "<SUMMARY>"),))
    [chosen] = yield ChoiceCall((ChoiceRequest(CONVERSATION, "The better response is"),), other)
    doubled = yield FunctionCall(lambda x: 2 * x, 21)
    return sampled.text, chosen.logprobs, doubled


def test_the_same_logic_runs_with_sync_and_async_methods():
    sync, concurrent = Recording("own"), Recording("own")
    assert drive(logic(), sync) == ("own:<SUMMARY>", (-0.1, -2.0), 42)
    assert asyncio.run(adrive(logic(), concurrent)) == ("own:<SUMMARY>", (-0.1, -2.0), 42)
    assert sync.calls == ["sample", "choose"] and concurrent.calls == ["asample", "choose"]


def test_a_call_may_name_another_backend():
    own, other = Recording("own"), Recording("other")
    drive(logic(other), own)
    assert own.calls == ["sample"] and other.calls == ["choose"]


def test_finished_is_a_step_that_asks_nothing():
    assert drive(finished(7), Recording("unused")) == 7


def test_an_async_function_in_a_sync_run_is_a_clear_error():
    async def judge(_):
        return 0

    with pytest.raises(TypeError, match="use ainvoke/astream"):
        drive((yield_call(FunctionCall(judge, None))), Recording("own"))
    assert asyncio.run(adrive(yield_call(FunctionCall(judge, None)), Recording("own"))) == 0


def yield_call(call):
    return (yield call)


def test_a_blocking_function_runs_off_the_event_loop_in_async_runs():
    loop_threads = []

    def heavy(_):
        return threading.current_thread().name

    async def run():
        loop_threads.append(threading.current_thread().name)
        return await adrive(yield_call(FunctionCall(heavy, None, blocking=True)), Recording("own"))

    worker = asyncio.run(run())
    assert worker != loop_threads[0]
    assert (
        drive(yield_call(FunctionCall(heavy, None, blocking=True)), Recording("own"))
        == threading.current_thread().name
    )


def test_one_driver_runs_any_logic_with_a_sync_or_an_async_handler():
    """The driver behind _calls and the OpenAI backend's plans and retries: each request answered in turn."""
    from langchain_llava_cot import _driving

    def plan():
        first = yield "a"
        second = yield first + "b"
        return [first, second]

    async def upper(asked: str) -> str:
        return asked.upper()

    assert _driving.drive(plan(), str.upper) == ["A", "AB"]
    assert asyncio.run(_driving.adrive(plan(), upper)) == ["A", "AB"]

    answered = []

    def failing(asked: str) -> str:
        answered.append(asked)
        raise KeyError(asked)

    with pytest.raises(KeyError, match="a"):
        _driving.drive(plan(), failing)
    assert answered == ["a"]  # the handler's error ends the run


def test_steps_run_together_share_one_call_per_kind_and_backend():
    from langchain_llava_cot._calls import together

    def asks(prefix: str, n: int):
        sampled = yield SampleCall(tuple(SampleRequest(CONVERSATION, f"{prefix}{i}") for i in range(n)))
        doubled = yield FunctionCall(lambda x: 2 * x, n)
        return [s[0].text for s in sampled], doubled

    backend = Recording("own")
    (values, saved) = drive(together([asks("a", 1), asks("b", 2), logic()]), backend)
    assert values[0] == (["own:a0"], 2) and values[1] == (["own:b0", "own:b1"], 4)
    assert values[2] == ("own:<SUMMARY>", (-0.1, -2.0), 42)
    assert backend.calls == ["sample", "choose"]  # three steps' samples in one call; the choice alone
    assert saved == 2
