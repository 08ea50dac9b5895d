"""ChatLlavaCoT end to end on tiny random-weight LLaVA, Mllama and Idefics3 models.

Random weights write nonsense, so these tests check the machinery, not the answers:
every stage is sampled and judged on the real model, through every entry point.
"""

import asyncio
import base64
import io

import pytest
from langchain_core.messages import HumanMessage
from PIL import Image, ImageDraw

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot.backends.transformers import TransformersBackend

STAGE_NAMES = ["summary", "caption", "reasoning", "conclusion"]


def red_circle_b64() -> str:
    image = Image.new("RGB", (64, 64), "white")
    ImageDraw.Draw(image).ellipse((8, 8, 30, 30), fill="red")
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()


QUESTION = [
    HumanMessage(
        content=[
            {"type": "image", "base64": red_circle_b64(), "mime_type": "image/png"},
            {"type": "text", "text": "How many red shapes are there?"},
        ]
    )
]


@pytest.fixture(scope="module")
def backends():
    """One loaded backend per architecture, shared by the strategies (as a server would)."""
    return {}


def model_for(path, backends, strategy):
    if path not in backends:
        backends[path] = TransformersBackend(path)
    return ChatLlavaCoT(
        backend=backends[path], strategy=strategy, candidates=3, judge="pairwise", seed=0, max_stage_tokens=8
    )


@pytest.mark.parametrize("strategy", ["greedy", "stage_beam"])
def test_invoke_ainvoke_and_stream(tiny_vlm_path, backends, strategy):
    llm = model_for(tiny_vlm_path, backends, strategy)

    msg = llm.invoke(QUESTION)
    record = msg.response_metadata["llava_cot"]
    assert [s["stage"] for s in record["steps"]] == STAGE_NAMES
    width = 1 if strategy == "greedy" else 3
    assert all(len(s["candidates"]) == width for s in record["steps"])
    assert msg.usage_metadata["output_tokens"] > 0 and msg.usage_metadata["input_tokens"] > 0
    assert msg.response_metadata["model_name"] == str(tiny_vlm_path)
    assert msg.content == record["chosen"]["conclusion"]
    if strategy == "stage_beam":
        methods = {c["method"] for s in record["steps"] for c in s["comparisons"]}
        assert methods <= {"logits", "identical", "precheck"} and methods

    again = asyncio.run(llm.ainvoke(QUESTION))
    assert again.response_metadata["llava_cot"]["chosen"] == record["chosen"]  # seeded: reproducible

    chunks = list(llm.stream(QUESTION))
    streamed_reasoning = "".join(c.additional_kwargs.get("reasoning_content", "") for c in chunks)
    assert streamed_reasoning == msg.additional_kwargs["reasoning_content"]
    assert "".join(c.content for c in chunks) == msg.content
