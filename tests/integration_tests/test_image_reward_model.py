"""An image-text reward model in-process: a tiny random LLaVA with a score head reads the picture."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest
import torch
from langchain_core.messages import HumanMessage
from PIL import Image
from safetensors import safe_open
from transformers import AutoModel, AutoProcessor

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot._calls import drive
from langchain_llava_cot.backends.transformers import TransformersBackend
from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.images import image_message
from langchain_llava_cot.judges import JudgeTask, StageJudges
from langchain_llava_cot.model_builders import add_score_head
from langchain_llava_cot.reward_models import ImageRewardModelJudge, load_score_head
from langchain_llava_cot.stages import Stage


def _png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, format="PNG")
    return buffer.getvalue()


RED, BLUE = _png("red"), _png("blue")
CANDIDATES = ("two red circles", "three blue squares", "two red circles", "one green triangle at the top")


def task(picture: bytes = RED) -> JudgeTask:
    conversation = Conversation((Turn("user", "How many red circles?", (picture,)),))
    return JudgeTask(conversation, Stage.CAPTION, {Stage.SUMMARY: "count the red circles"}, CANDIDATES)


@pytest.fixture(scope="module")
def reward_folder(tiny_llava_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return add_score_head(tiny_llava_path, tmp_path_factory.mktemp("image-reward"), seed=1)


@pytest.fixture(scope="module")
def judge(reward_folder: Path) -> ImageRewardModelJudge:
    return ImageRewardModelJudge(reward_folder, batch_size=8)


def test_the_folder_holds_the_model_without_its_lm_head_and_one_score_head(reward_folder: Path) -> None:
    with safe_open(str(reward_folder / "model.safetensors"), framework="pt") as weights:
        keys = set(weights.keys())
    assert "language_model.score.weight" in keys and not any(k.endswith("lm_head.weight") for k in keys)
    assert load_score_head(reward_folder).weight.shape == (1, 64)


def test_each_candidate_is_read_with_the_picture_and_batched_as_one_at_a_time(
    judge: ImageRewardModelJudge, reward_folder: Path
) -> None:
    batched = drive(judge.score(task(), None), None).scores
    alone = ImageRewardModelJudge(reward_folder, batch_size=1)
    assert drive(alone.score(task(), None), None).scores == pytest.approx(batched, abs=1e-5)
    assert batched[0] == batched[2] and len(set(batched)) == 3
    # by hand: the processor's chat template, the base model's last hidden state, the score head
    processor, model = AutoProcessor.from_pretrained(reward_folder), AutoModel.from_pretrained(reward_folder)
    text = judge.text_of(task(), 1)
    assert "<image>" in text and text.rstrip().endswith("<CAPTION> three blue squares </CAPTION><|eot_id|>")
    inputs = processor(text=[text], images=[[Image.open(io.BytesIO(RED))]], return_tensors="pt")
    with torch.inference_mode():
        by_hand = load_score_head(reward_folder)(model(**inputs).last_hidden_state[0, -1]).item()
    assert by_hand == pytest.approx(batched[1], abs=1e-4)


def test_the_picture_changes_the_scores(judge: ImageRewardModelJudge) -> None:
    red = drive(judge.score(task(RED), None), None).scores
    blue = drive(judge.score(task(BLUE), None), None).scores
    assert all(abs(a - b) > 1e-6 for a, b in zip(red, blue))


def test_it_judges_a_search_with_the_picture(tiny_llava_path: Path, judge: ImageRewardModelJudge) -> None:
    backend = TransformersBackend(tiny_llava_path)
    messages = [image_message(RED, "How many red circles?")]
    for strategy in ("best_of_n", "stage_beam", "retrace"):
        llm = ChatLlavaCoT(
            backend=backend, strategy=strategy, candidates=2, judge=judge, max_stage_tokens=6, seed=0
        )
        record = llm.invoke(messages).response_metadata["llava_cot"]
        scored = [step for step in record["steps"] if step["scores"]]
        assert scored and record["judge"]["name"] == "image_reward_model"
    per_stage = ChatLlavaCoT(
        backend=backend, candidates=2, judge=StageJudges({"caption": judge}), max_stage_tokens=6, seed=0
    )
    message = asyncio.run(per_stage.ainvoke([HumanMessage(content=messages[0].content)]))
    caption = next(s for s in message.response_metadata["llava_cot"]["steps"] if s["stage"] == "caption")
    assert caption["scores"] and all(score is not None for score in caption["scores"])


def test_a_folder_without_a_score_head_is_a_clear_error(tiny_llava_path: Path) -> None:
    with pytest.raises(ValueError, match="holds 0 score heads"):
        ImageRewardModelJudge(tiny_llava_path)
