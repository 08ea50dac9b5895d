"""End to end through a real OpenAI-compatible server: ``transformers serve`` on 127.0.0.1.

The server runs as a subprocess serving a tiny random-weight LLaVA folder, offline. It
accepts images but ignores ``n``, ``logprobs`` and a partial assistant message, rejects
``continue_final_message`` (HTTP 422), fails on ``stop`` (HTTP 500) and samples only
through a per-request ``generation_config``: the backend's fallbacks carry every search
strategy through it anyway. Random weights write nonsense, so these tests check the
machinery, not the answers. Needs ``transformers[serving]`` (fastapi, uvicorn, openai).
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from langchain_core.messages import HumanMessage
from PIL import Image, ImageDraw
from servers import DEMO_MESSAGES, STAGE_LIMITS, free_port, running_server

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot.backends.base import SampleRequest
from langchain_llava_cot.backends.openai import (
    ModelNotServedError,
    OpenAICompatibleBackend,
    ServerCapabilities,
)
from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.demo import DEMO_MODEL_PATH
from langchain_llava_cot.judges import PairwiseJudge

pytestmark = pytest.mark.timeout(600)  # the first test also waits for the server, minutes on a busy machine

STAGE_NAMES = ["summary", "caption", "reasoning", "conclusion"]


def _png() -> bytes:
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((8, 8, 30, 30), fill="red")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


IMAGE = _png()
QUESTION = [
    HumanMessage(
        content=[
            {"type": "image", "base64": base64.b64encode(IMAGE).decode(), "mime_type": "image/png"},
            {"type": "text", "text": "How many red shapes are there?"},
        ]
    )
]


@pytest.fixture(scope="session")
def served(tiny_llava_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    """``transformers serve`` pinned to the tiny LLaVA folder; yields (base_url, model)."""
    port = free_port()
    cli = Path(sys.executable).with_name("transformers")
    log_path = tmp_path_factory.mktemp("serve") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    command = [str(cli), "serve", str(tiny_llava_path), "--host", "127.0.0.1", "--port", str(port)]
    ready = f"http://127.0.0.1:{port}/health"
    with running_server(command, ready_url=ready, log_path=log_path, env=env, timeout=300):
        yield f"http://127.0.0.1:{port}/v1", str(tiny_llava_path)


@pytest.fixture(scope="session")
def served_demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``transformers serve`` pinned to the bundled demo model; yields its base URL."""
    port = free_port()
    cli = Path(sys.executable).with_name("transformers")
    log_path = tmp_path_factory.mktemp("serve-demo") / "serve.log"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_VERBOSITY": "error"}
    command = [str(cli), "serve", str(DEMO_MODEL_PATH), "--host", "127.0.0.1", "--port", str(port)]
    ready = f"http://127.0.0.1:{port}/health"
    with running_server(command, ready_url=ready, log_path=log_path, env=env, timeout=300):
        yield f"http://127.0.0.1:{port}/v1"


def test_stage_beam_with_no_judge_named_works_on_a_server_without_logprobs(served_demo: str) -> None:
    """The default judge used to be likelihood everywhere, and failed here ("this backend gave none").

    Only the first stage is worth reading: ``transformers serve`` cannot continue a partial
    answer, so each later stage is asked for explicitly, a request the demo model was never
    trained on (it writes a summary again, and the stage comes back empty and repaired).
    The judge's verdicts are written and parsed; the tiny model's run above exercises them.
    """
    llm = ChatLlavaCoT(
        base_url=served_demo, strategy="stage_beam", candidates=2, seed=0, max_stage_tokens=STAGE_LIMITS
    )
    answer = llm.invoke(DEMO_MESSAGES)
    record = answer.response_metadata["llava_cot"]
    assert record["judge"]["name"] == "pairwise" and "no token log-probabilities" in record["judge"]["reason"]
    assert [s["stage"] for s in record["steps"]] == STAGE_NAMES and record["chosen"]["summary"]
    assert all(c["mean_logprob"] is None for s in record["steps"] for c in s["candidates"])
    methods = {c["method"] for s in record["steps"] for c in s["comparisons"]}
    assert methods <= {"generated", "unparseable", "identical", "precheck"}  # nothing read from logprobs
    assert answer.response_metadata["model_name"] == str(DEMO_MODEL_PATH)


@pytest.fixture(scope="session")
def backend(served: tuple[str, str]) -> OpenAICompatibleBackend:
    base_url, model = served
    return OpenAICompatibleBackend(base_url, model, timeout=30)


def test_probe_finds_what_transformers_serve_honours(backend: OpenAICompatibleBackend) -> None:
    assert backend.probe() == ServerCapabilities(
        n=False,
        stop=False,
        logprobs=False,
        top_logprobs=False,
        continuation=False,
        images=True,
        generation_config=True,
    )
    assert not backend.supports_choice


def test_greedy_and_n_fallback_sampling(backend: OpenAICompatibleBackend) -> None:
    conversation = Conversation((Turn("user", "How many red shapes are there?", (IMAGE,)),))
    greedy = SampleRequest(conversation, "<SUMMARY>", stop=("</SUMMARY>",), max_new_tokens=6)
    sampled = SampleRequest(
        conversation, "<SUMMARY>", n=3, stop=("</SUMMARY>",), max_new_tokens=6, temperature=1.0, seed=7
    )
    [[first], candidates] = backend.sample([greedy, sampled])
    [[again]] = asyncio.run(backend.asample([greedy]))

    assert first.text == again.text and first.completion_tokens > 0 and first.prompt_tokens > 64
    assert len(candidates) == 3 and len({c.text for c in candidates}) > 1
    assert all(c.token_logprobs is None for c in candidates)


@pytest.mark.parametrize(
    ("strategy", "named"), [("greedy", True), ("stage_beam", True), ("stage_beam", False)]
)
def test_chat_llava_cot_through_the_server(served: tuple[str, str], strategy: str, named: bool) -> None:
    base_url, model = served
    # Short stages and verdicts keep this fast on 2 CPU cores; the machinery is the same.
    judge = {"judge": PairwiseJudge(seed=0, max_verdict_tokens=4)} if named else {}  # else "auto"
    llm = ChatLlavaCoT(
        base_url=base_url, model=model, strategy=strategy, candidates=2, seed=0, max_stage_tokens=4, **judge
    )
    msg = llm.invoke(QUESTION) if strategy == "stage_beam" else asyncio.run(llm.ainvoke(QUESTION))
    record = msg.response_metadata["llava_cot"]
    assert [s["stage"] for s in record["steps"]] == STAGE_NAMES
    assert all(len(s["candidates"]) == (1 if strategy == "greedy" else 2) for s in record["steps"])
    assert msg.usage_metadata is not None and msg.usage_metadata["output_tokens"] > 0
    assert msg.response_metadata["model_name"] == model
    if strategy == "stage_beam":
        methods = {c["method"] for s in record["steps"] for c in s["comparisons"]}
        assert methods and methods <= {"generated", "unparseable", "identical", "precheck"}
        assert record["judge"]["name"] == "pairwise"  # named, or chosen: the server gives no logprobs


def test_wrong_model_name_is_a_clear_error(served: tuple[str, str]) -> None:
    base_url, _ = served
    backend = OpenAICompatibleBackend(base_url, "no-such-model", timeout=10)
    started = time.perf_counter()
    with pytest.raises(ModelNotServedError, match="does not serve model 'no-such-model'"):
        backend.probe()
    assert time.perf_counter() - started < 5
