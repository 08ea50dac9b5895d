import random
from collections import Counter

import pytest
from PIL import Image

from langchain_llava_cot.demo.dataset import (
    KINDS,
    SPLITS,
    examples,
    get_example,
    is_correct,
    iter_examples,
    normalize_answer,
    parse_caption,
    perturb_objects,
    right_stage,
    split_of,
    write_stages,
    wrong_stage,
)
from langchain_llava_cot.stages import STAGES, Stage, parse_answer


def test_examples_are_deterministic() -> None:
    first = examples("test", 20)
    again = examples("test", 20)
    assert first == again
    assert [e.image_bytes for e in first[:5]] == [e.image_bytes for e in again[:5]]
    assert get_example("test", 7) == first[7]
    assert examples("test", 5, start=10) == first[10:15]


@pytest.mark.parametrize("split", SPLITS)
def test_each_example_belongs_to_its_split(split: str) -> None:
    for example in examples(split, 50):  # type: ignore[arg-type]
        assert example.split == split
        assert split_of(example.scene) == split


def test_splits_share_no_scene() -> None:
    keys = {split: {e.scene.key for e in examples(split, 300)} for split in SPLITS}  # type: ignore[arg-type]
    assert not keys["train"] & keys["test"]
    assert not keys["train"] & keys["validation"]
    assert not keys["validation"] & keys["test"]


def test_unknown_split_is_rejected() -> None:
    with pytest.raises(ValueError, match="Unknown split"):
        next(iter_examples("dev"))  # type: ignore[arg-type]


def test_every_kind_appears_and_answers_are_varied() -> None:
    sample = examples("train", 400)
    assert set(Counter(e.kind for e in sample)) == set(KINDS)
    answers = Counter(e.answer for e in sample)
    assert answers.most_common(1)[0][1] < 0.25 * len(sample)


def test_answers_are_four_well_formed_stages_and_correct() -> None:
    for example in examples("validation", 100):
        parsed = parse_answer(example.target)
        assert parsed.well_formed, (example.target, parsed.problems)
        assert set(parsed.stages) == set(STAGES)
        assert is_correct(parsed.conclusion, example)


def test_caption_lists_every_object_and_parses_back() -> None:
    for example in examples("train", 50):
        listed = parse_caption(example.stages[Stage.CAPTION])
        assert [(o.cell, o.name) for o in listed] == sorted((o.cell, o.name) for o in example.scene.objects)


def test_image_is_a_small_rgb_png() -> None:
    example = get_example("test", 0)
    image = example.image()
    assert isinstance(image, Image.Image)
    assert image.mode == "RGB" and image.size == (64, 64)
    assert example.image_bytes.startswith(b"\x89PNG")
    conversation = example.conversation()
    assert conversation.question == example.question
    assert conversation.images == (example.image_bytes,)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3", "3"),
        ("three", "3"),
        ("The answer is 3.", "3"),
        ("Red", "red"),
        ("circles", "circle"),
        ("yes", "yes"),
        ("2 or 3", None),
        ("", None),
        ("I cannot tell", None),
    ],
)
def test_normalize_answer(text: str, expected: str | None) -> None:
    assert normalize_answer(text) == expected


def test_is_correct_rejects_a_wrong_or_hedged_answer() -> None:
    example = next(e for e in examples("test", 50) if e.answer.isdigit())
    assert is_correct(f"There are {example.answer}.", example)
    assert not is_correct(str(int(example.answer) + 1), example)
    assert not is_correct(f"{example.answer} or {int(example.answer) + 1}", example)


@pytest.mark.parametrize("stage", STAGES)
def test_wrong_stage_differs_from_the_right_one(stage: Stage) -> None:
    rng = random.Random(0)
    for example in examples("train", 60):
        wrong = wrong_stage(example, stage, rng)
        assert wrong != example.stages[stage]
        if stage is Stage.CONCLUSION:
            assert not is_correct(wrong, example)


def test_right_reasoning_follows_a_wrong_caption() -> None:
    rng = random.Random(1)
    for example in examples("train", 40):
        objects = perturb_objects(example.scene.objects, rng)
        assert objects != example.scene.objects
        wrong = write_stages(example.spec, objects)
        chosen = {Stage.SUMMARY: example.stages[Stage.SUMMARY], Stage.CAPTION: wrong[Stage.CAPTION]}
        assert right_stage(example, Stage.REASONING, chosen) == wrong[Stage.REASONING]
        chosen[Stage.REASONING] = wrong[Stage.REASONING]
        assert right_stage(example, Stage.CONCLUSION, chosen) == wrong[Stage.CONCLUSION]


def _three_objects() -> tuple:
    from langchain_llava_cot.demo.dataset import Shape

    return (
        Shape("square", "red", "large", 0),
        Shape("circle", "blue", "small", 4),
        Shape("square", "red", "small", 8),
    )


def test_counting_reasoning_checks_each_object_in_the_criterions_words() -> None:
    from langchain_llava_cot.demo.dataset import Filter, Spec

    spec = Spec("count", "How many red squares are there?", first=Filter(colour="red", shape="square"))
    reasoning = write_stages(spec, _three_objects())[Stage.REASONING]
    assert reasoning == (
        "Count red square: large red square at top left: red square yes 1; "
        "small blue circle at center: blue circle no; "
        "small red square at bottom right: red square yes 2. That is 2."
    )
    assert write_stages(spec, _three_objects(), error="count")[Stage.REASONING].endswith("yes 2. That is 3.")
    assert write_stages(spec, ())[Stage.REASONING] == "Count red square: nothing. That is 0."
    small = Spec("count", "How many small objects are there?", first=Filter(size="small"))
    assert write_stages(small, _three_objects())[Stage.REASONING].startswith(
        "Count small: large red square at top left: large no; small blue circle at center: small yes 1;"
    )


def test_attribute_reasoning_walks_to_the_place_asked_about() -> None:
    from langchain_llava_cot.demo.dataset import Spec

    spec = Spec("attribute", "What colour is the object at center?", attribute="colour", cell=4)
    stages = write_stages(spec, _three_objects())
    assert stages[Stage.REASONING] == (
        "Find center: large red square at top left no; small blue circle at center yes. Its colour is blue."
    )
    assert stages[Stage.CONCLUSION] == "blue"
    empty = Spec("attribute", "What colour is the object at top right?", attribute="colour", cell=2)
    stages = write_stages(empty, _three_objects())
    assert stages[Stage.REASONING].endswith("at bottom right no. Nothing is at top right: none.")
    assert stages[Stage.CONCLUSION] == "none"


def test_spatial_reasoning_finds_both_objects_then_compares_their_rows_or_columns() -> None:
    from langchain_llava_cot.demo.dataset import Filter, Spec

    red, blue = Filter(colour="red", shape="square"), Filter(colour="blue", shape="circle")
    question = "Is the blue circle below the red square?"
    spec = Spec("spatial", question, first=blue, second=red, relation="below")
    stages = write_stages(spec, _three_objects())
    assert stages[Stage.REASONING] == (
        "Find blue circle: large red square at top left: red square no; "
        "small blue circle at center: blue circle yes, row 2. "
        "Find red square: large red square at top left: red square yes, row 1. "
        "So row 2 is below row 1: yes."
    )
    assert write_stages(spec, _three_objects(), error="flip")[Stage.REASONING].endswith(
        "So row 2 is not below row 1: no."
    )
    green_circle = Filter(colour="green", shape="circle")
    green = Spec("spatial", "Is the green circle below?", first=green_circle, second=red, relation="below")
    assert write_stages(green, _three_objects())[Stage.REASONING].endswith("There is no green circle, so no.")


def test_off_domain_answers_are_four_short_stages_saying_what_the_model_knows() -> None:
    import random

    from langchain_llava_cot.demo.dataset import off_domain_image, off_domain_stages

    for picture in ("none", "other"):
        stages = off_domain_stages(picture)
        assert list(stages) == list(Stage) and all(stages.values())
        assert "circles, squares and triangles" in stages[Stage.CONCLUSION]
    assert off_domain_stages("none")[Stage.CAPTION] != off_domain_stages("other")[Stage.CAPTION]
    rng = random.Random(0)
    pictures = [off_domain_image(rng) for _ in range(12)]
    assert all(p.size == (64, 64) and p.mode == "RGB" for p in pictures)
    assert len({p.tobytes() for p in pictures}) == 12


def test_cell_labels_name_each_cell_and_mark_off_domain_pictures() -> None:
    from langchain_llava_cot.demo.vision import CLASSES, OFF_DOMAIN_CLASS, cell_labels

    example = get_example("test", 3)
    labels = cell_labels(example.scene)
    occupied = {o.cell for o in example.scene.objects}
    assert [i for i, label in enumerate(labels) if label] == sorted(occupied)
    kinds = {labels[o.cell] for o in example.scene.objects}
    assert len(kinds) == len({(o.size, o.colour, o.shape) for o in example.scene.objects})
    assert cell_labels(None) == [OFF_DOMAIN_CLASS] * 9 and OFF_DOMAIN_CLASS == CLASSES - 1 == 25
