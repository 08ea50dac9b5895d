"""The bundled demo model: it loads, answers in four stages, and ``run_eval`` works end to end."""

import json
from pathlib import Path

import pytest

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot.demo import (
    DEMO_ANSWER,
    DEMO_MODEL_PATH,
    DEMO_QUESTION,
    demo_image_path,
)
from langchain_llava_cot.demo.dataset import KINDS, SPLITS, bundled_example, examples, is_correct
from langchain_llava_cot.eval import run_eval
from langchain_llava_cot.images import image_message
from langchain_llava_cot.stages import parse_answer


@pytest.fixture(scope="module")
def greedy() -> ChatLlavaCoT:
    return ChatLlavaCoT(strategy="greedy", return_tagged_text=True)


def _ask(llm: ChatLlavaCoT, image: bytes, question: str):  # noqa: ANN202
    return llm.invoke([image_message(image, question)])


def test_dataset_is_deterministic_and_splits_are_disjoint() -> None:
    assert examples("test", 30) == examples("test", 30)
    keys = {split: {e.scene.key for e in examples(split, 1000)} for split in SPLITS}
    assert not keys["train"] & keys["test"]
    assert not keys["train"] & keys["validation"]
    assert not keys["test"] & keys["validation"]


def test_bundled_model_is_small_safetensors() -> None:
    weights = DEMO_MODEL_PATH / "model.safetensors"
    assert weights.is_file()
    assert weights.stat().st_size < 20 * 1024 * 1024
    assert (DEMO_MODEL_PATH / "tokenizer.json").is_file()
    assert demo_image_path().is_file()


BENCHMARKS = Path(__file__).parents[2] / "benchmarks"


def test_bundled_vision_weights_are_named_as_both_transformers_and_vllm_load_them() -> None:
    from safetensors import safe_open

    with safe_open(DEMO_MODEL_PATH / "model.safetensors", framework="pt") as weights:
        tower = [key for key in weights.keys() if key.startswith("vision_tower.")]
    assert tower and all(key.startswith("vision_tower.vision_model.") for key in tower)


def test_the_bundled_model_reasons_from_a_right_caption() -> None:
    import importlib.util

    spec = importlib.util.spec_from_file_location("reasoning_probe", BENCHMARKS / "reasoning_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    result = probe.probe(DEMO_MODEL_PATH, questions=30)
    assert result["questions"] == 30 and set(result["by_kind"]) <= set(KINDS)
    assert result["reasoning_right"] >= 0.6  # teacher-forced: whole reasonings right, token for token


def _answer_loss(model, processor, example, image) -> float:  # noqa: ANN001
    """Mean loss of ``example``'s four-stage answer given ``image`` (teacher forcing)."""
    import torch

    from langchain_llava_cot.demo.sequences import prompt_text

    prompt = prompt_text(processor, example.conversation())  # the engine's prompt, as in training
    start = len(processor(text=prompt, images=[image], add_special_tokens=False)["input_ids"][0])
    inputs = processor(
        text=prompt + example.target, images=[image], add_special_tokens=False, return_tensors="pt"
    )
    with torch.inference_mode():
        logits = model(**inputs).logits[0, start - 1 : -1]
    return float(torch.nn.functional.cross_entropy(logits, inputs["input_ids"][0, start:]))


def test_bundled_model_reads_the_image() -> None:
    """Another scene's picture makes the right answers much less likely."""
    from transformers import AutoModelForImageTextToText, AutoProcessor

    processor = AutoProcessor.from_pretrained(DEMO_MODEL_PATH)
    model = AutoModelForImageTextToText.from_pretrained(DEMO_MODEL_PATH).eval()
    scenes = examples("test", 21)
    own = [_answer_loss(model, processor, ex, ex.image()) for ex in scenes[:20]]
    other = [_answer_loss(model, processor, ex, nxt.image()) for ex, nxt in zip(scenes, scenes[1:])]
    assert sum(other) > 1.3 * sum(own), (sum(own) / 20, sum(other) / 20)


def _png(picture) -> bytes:  # noqa: ANN001
    import io

    buffer = io.BytesIO()
    picture.convert("RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def test_bundled_model_says_what_it_knows_when_asked_anything_else(greedy: ChatLlavaCoT) -> None:
    """Small talk, a question without its picture, and pictures unlike the drawings (a fractal and
    Gaussian noise, neither of them in training) get four short stages and a conclusion that says
    what the model can do. (A smooth grey radial gradient, like an empty drawing's background, is
    still read as a drawing: the README says so.)"""
    from langchain_core.messages import HumanMessage, SystemMessage
    from PIL import Image

    requests = [
        [HumanMessage("Hello")],
        [SystemMessage("You are a helpful assistant."), HumanMessage("What is the capital of France?")],
        [HumanMessage(DEMO_QUESTION)],
        [image_message(_png(Image.effect_mandelbrot((64, 64), (-2.0, -1.5, 1.0, 1.5), 100)), DEMO_QUESTION)],
        [image_message(_png(Image.effect_noise((64, 64), 60)), "What is this?")],
    ]
    for messages in requests:
        content = str(greedy.invoke(messages).content)
        parsed = parse_answer(content)
        assert parsed.well_formed, (messages, content)
        assert "circles, squares and triangles" in parsed.conclusion, (messages, content)


def test_demo_image_matches_its_question() -> None:
    example = bundled_example()
    red_squares = [o for o in example.scene.objects if (o.colour, o.shape) == ("red", "square")]
    assert DEMO_QUESTION == "How many red squares are there?" and DEMO_ANSWER == str(len(red_squares))
    assert demo_image_path().read_bytes() == example.image_bytes


def test_bundled_model_answers_well_formed(greedy: ChatLlavaCoT) -> None:
    for example in examples("test", 6):
        message = _ask(greedy, example.image_bytes, example.question)
        parsed = parse_answer(str(message.content))
        assert parsed.well_formed, (message.content, parsed.problems)


def test_default_chat_model_uses_the_bundled_model(greedy: ChatLlavaCoT) -> None:
    message = _ask(greedy, demo_image_path().read_bytes(), DEMO_QUESTION)
    assert parse_answer(str(message.content)).conclusion.strip()
    assert message.usage_metadata["output_tokens"] > 0


def test_stage_beam_answers_the_demo_question() -> None:
    llm = ChatLlavaCoT(strategy="stage_beam", candidates=2, judge="pairwise", seed=0)
    message = _ask(llm, demo_image_path().read_bytes(), DEMO_QUESTION)
    record = message.response_metadata["llava_cot"]
    assert [s["stage"] for s in record["steps"]] == ["summary", "caption", "reasoning", "conclusion"]
    assert all(len(s["candidates"]) == 2 for s in record["steps"])
    assert isinstance(is_correct(str(message.content), bundled_example()), bool)


def test_eval_runs_end_to_end(tmp_path) -> None:  # noqa: ANN001
    report = run_eval(
        strategies=["greedy", "best_of_n:likelihood:2", "stage_beam:pairwise:2"],
        questions=3,
        output_dir=tmp_path,
        progress=False,
    )
    assert [r.name for r in report.results] == ["greedy", "best_of_n:likelihood:2", "stage_beam:pairwise:2"]
    assert report.json_path and report.json_path.is_file()
    assert report.plot_path and report.plot_path.read_bytes().startswith(b"\x89PNG")
    data = json.loads(report.json_path.read_text())
    assert data["questions"] == 3
    for result in data["results"]:
        assert 0.0 <= result["accuracy"] <= result["pass_at_n"] <= 1.0
        assert len(result["records"]) == 3
        assert result["tokens_per_question"] > 0
    assert "| greedy |" in report.markdown()
