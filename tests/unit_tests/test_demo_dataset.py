import random
import re
from collections import Counter

import pytest
from PIL import Image

from langchain_llava_cot.demo.dataset import (
    KINDS,
    SPLITS,
    WORLDS,
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
from langchain_llava_cot.demo.questions import CLASSIC_KINDS
from langchain_llava_cot.demo.scenes import Scene, Shape
from langchain_llava_cot.stages import STAGES, Stage, parse_answer


@pytest.mark.parametrize("world", WORLDS)
def test_examples_are_deterministic(world: str) -> None:
    first = examples("test", 20, world=world)  # type: ignore[arg-type]
    again = examples("test", 20, world=world)  # type: ignore[arg-type]
    assert first == again
    assert [e.image_bytes for e in first[:5]] == [e.image_bytes for e in again[:5]]
    assert get_example("test", 7, world=world) == first[7]  # type: ignore[arg-type]
    assert examples("test", 5, start=10, world=world) == first[10:15]  # type: ignore[arg-type]


@pytest.mark.parametrize("split", SPLITS)
@pytest.mark.parametrize("world", ["free", "classic"])
def test_each_example_belongs_to_its_split(split: str, world: str) -> None:
    for example in examples(split, 50, world=world):  # type: ignore[arg-type]
        assert example.split == split and example.world == world
        assert split_of(example.scene) == split


def test_splits_share_no_scene() -> None:
    keys = {split: {e.scene.key for e in examples(split, 300)} for split in SPLITS}  # type: ignore[arg-type]
    keys["train"] |= {e.scene.key for e in examples("train", 300, world="classic")}
    keys["test"] |= {e.scene.key for e in examples("test", 100, world="novel")}
    assert not keys["train"] & keys["test"]
    assert not keys["train"] & keys["validation"]
    assert not keys["validation"] & keys["test"]


def test_unknown_split_or_world_is_rejected() -> None:
    with pytest.raises(ValueError, match="Unknown split"):
        next(iter_examples("dev"))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="Unknown world"):
        next(iter_examples("test", world="mars"))  # type: ignore[arg-type]


def test_every_kind_appears_and_answers_are_varied() -> None:
    sample = examples("train", 400)
    assert set(Counter(e.kind for e in sample)) == set(KINDS)
    assert set(Counter(e.kind for e in examples("train", 200, world="classic"))) == set(CLASSIC_KINDS)
    answers = Counter(e.answer for e in sample)
    assert answers.most_common(1)[0][1] < 0.25 * len(sample)


@pytest.mark.parametrize("world", WORLDS)
def test_answers_are_four_well_formed_stages_and_correct(world: str) -> None:
    for example in examples("validation", 100, world=world):  # type: ignore[arg-type]
        parsed = parse_answer(example.target)
        assert parsed.well_formed, (example.target, parsed.problems)
        assert set(parsed.stages) == set(STAGES)
        assert is_correct(parsed.conclusion, example)


def test_caption_lists_every_object_and_parses_back() -> None:
    for example in examples("train", 50) + examples("train", 20, world="classic"):
        listed = parse_caption(example.stages[Stage.CAPTION])
        assert listed == example.scene.objects
        assert [o.cell for o in listed] == sorted(o.cell for o in listed)


def test_image_is_an_rgb_png_of_the_scenes_size() -> None:
    example = get_example("test", 0)
    image = example.image()
    assert isinstance(image, Image.Image)
    assert image.mode == "RGB" and image.size == (example.scene.style.width, example.scene.style.height)
    assert example.image_bytes.startswith(b"\x89PNG")
    jpeg = next(e for e in examples("test", 60, world="novel") if e.look == "jpeg")
    assert jpeg.image_bytes.startswith(b"\xff\xd8")
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


def test_vision_targets_name_what_each_part_of_the_grid_holds_and_each_patch_shows() -> None:
    from langchain_llava_cot.demo.vision import OFF_DOMAIN_CLASS, coverage_labels, region_targets

    for world in ("free", "classic"):
        example = get_example("test", 3, world=world)  # type: ignore[arg-type]
        regions = region_targets(example.scene)
        assert sum(sum(row) for row in regions) == len(example.scene.objects)
        for obj in example.scene.objects:
            assert sum(regions[obj.cell]) >= 1
        covered = coverage_labels(example.scene)
        assert len(covered) == 36 and any(covered)
    big = Scene(objects=(Shape("square", "red", "large", 4),))  # a large square at the centre
    covered = coverage_labels(big)
    assert covered[2 * 6 + 2] == covered[3 * 6 + 3] != 0 and covered[0] == 0
    assert coverage_labels(None) == [OFF_DOMAIN_CLASS] * 36
    assert all(row[-1] == 1.0 and sum(row) == 1.0 for row in region_targets(None))


def test_the_classic_world_is_the_first_demo_models_world() -> None:
    # The classic test split is the old held-out set, unchanged: its first questions and pictures.
    first = examples("test", 3, world="classic")
    assert [e.question for e in first] == [
        "Are there more yellow objects than red triangles?",
        "Are there more large objects than red objects?",
        "How many yellow objects are there?",
    ]
    assert all(e.image().size == (64, 64) for e in first)


@pytest.mark.parametrize("world", ["free", "novel"])
def test_free_scenes_keep_shapes_apart_inside_the_picture_and_clear_of_the_grid_lines(world: str) -> None:
    import math

    for example in examples("validation", 80, world=world):  # type: ignore[arg-type]
        style, objects = example.scene.style, example.scene.objects
        assert 1 <= len(objects) <= 6
        short = min(style.width, style.height)
        for obj in objects:
            assert obj.radius is not None
            assert min(abs(obj.x - line) for line in (1 / 3, 2 / 3)) >= 0.04
            assert min(abs(obj.y - line) for line in (1 / 3, 2 / 3)) >= 0.04
            assert obj.cell == int(obj.y * 3) * 3 + int(obj.x * 3)
            assert obj.radius * short <= obj.x * style.width <= style.width - obj.radius * short
        for a in objects:
            for b in objects:
                if a is not b:
                    distance = math.hypot((a.x - b.x) * style.width, (a.y - b.y) * style.height)
                    assert distance > (a.radius + b.radius) * short  # type: ignore[operator]


@pytest.mark.parametrize("world", ["free", "novel", "classic"])
def test_every_shape_is_drawn_where_its_caption_puts_it(world: str) -> None:
    """The pixel at each shape's centre is the shape's own colour, whatever the picture's size.

    (JPEG-compressed looks are left out: their chroma is smeared over a tiny shape.)
    """
    from langchain_llava_cot.demo.scenes import COLOURS

    for example in examples("validation", 60, world=world):  # type: ignore[arg-type]
        scene = example.scene
        if scene.style.jpeg_quality is not None:
            continue
        picture = scene.render().convert("RGB")
        for obj in scene.objects:
            x = min(int(obj.x * picture.width), picture.width - 1)
            y = min(int(obj.y * picture.height), picture.height - 1)
            drawn, meant = picture.getpixel((x, y)), obj.fill or COLOURS[obj.colour]
            assert max(abs(a - b) for a, b in zip(drawn, meant)) < 80, (scene.style, obj, drawn)


def test_the_novel_world_holds_out_wordings_and_looks_and_has_no_training_split() -> None:
    from langchain_llava_cot.demo.phrasings import NOVEL, TRAINING, WRAPPERS
    from langchain_llava_cot.demo.styles import NOVEL_STYLES

    with pytest.raises(ValueError, match="held out of training"):
        next(iter_examples("train", world="novel"))
    novel = examples("test", 150, world="novel")
    assert {e.novelty for e in novel} == {"words", "look", "both"}
    assert {e.look for e in novel if e.novelty != "words"} == set(NOVEL_STYLES)

    def pattern(template: str) -> re.Pattern[str]:
        parts = re.split(r"\{\w+\}", template.rstrip("?."))
        return re.compile(".+".join(re.escape(part) for part in parts), re.IGNORECASE)

    def unwrapped(question: str) -> str:
        for wrapper in sorted(set(WRAPPERS), key=len, reverse=True):
            before, after = wrapper.split("{}")
            if question.startswith(before) and question.endswith(after):
                question = question[len(before) : len(question) - len(after)]
                break
        return question.rstrip("?.")

    novel_wordings = [pattern(t) for ts in NOVEL.values() for t in ts]
    trained_wordings = [pattern(t) for ts in TRAINING.values() for t in ts]
    free = examples("train", 400)
    assert all(any(p.fullmatch(unwrapped(e.question)) for p in trained_wordings) for e in free)
    assert not any(p.fullmatch(unwrapped(e.question)) for p in novel_wordings for e in free)
    words = [e for e in novel if e.novelty != "look"]
    assert all(any(p.fullmatch(e.question.rstrip("?.")) for p in novel_wordings) for e in words)
    assert all(e.scene.style.outline is None and e.scene.style.jpeg_quality is None for e in free)
    assert all(not e.scene.style.grain for e in free)
    assert max(max(e.scene.style.width, e.scene.style.height) for e in free) <= 1280


def test_held_out_wordings_are_new_sentences_of_words_the_model_has_read() -> None:
    """A model trained from scratch cannot know a word it never read; a new sentence it can."""
    from langchain_llava_cot.demo.phrasings import NOUNS, NOVEL, PLACE_NAMES, TRAINING, WRAPPERS

    def words(text: str) -> set[str]:
        return set(re.findall(r"[a-z']+", re.sub(r"\{\w+\}", "", text).lower()))

    trained = [t for ts in TRAINING.values() for t in ts] + [n for names, _ in PLACE_NAMES for n in names]
    known = set().union(*map(words, [*trained, *NOUNS, *WRAPPERS]))
    held_out = [t for ts in NOVEL.values() for t in ts] + [n for _, names in PLACE_NAMES for n in names]
    assert {t: words(t) - known for t in held_out if words(t) - known} == {}
    assert not set(held_out) & set(trained)
    for trained_names, held_out_names in PLACE_NAMES:
        assert not set(held_out_names) & set(trained_names)


def test_every_kind_is_asked_in_several_wordings() -> None:
    from langchain_llava_cot.demo.phrasings import TRAINING

    groups = {
        "count": ["count"],
        "exists": ["exists"],
        "attribute": ["attribute_place", "attribute_thing", "size_place", "size_thing"],
        "spatial": ["left of", "right of", "above", "below"],
        "comparison": ["comparison"],
        "arithmetic": ["subtract", "add"],
        "describe": ["describe"],
    }
    sample = examples("train", 600)
    for kind in KINDS:
        templates = {t for group in groups[kind] for t in TRAINING[group]}
        split = {t: re.split(r"\{\w+\}", t) for t in templates}
        patterns = {t: re.compile(".+".join(map(re.escape, parts)), re.I) for t, parts in split.items()}
        used = {t for e in sample if e.kind == kind for t, p in patterns.items() if p.fullmatch(e.question)}
        assert len(used) >= 2, (kind, used)


def test_total_counts_existence_and_descriptions_are_answered_from_the_caption() -> None:
    from langchain_llava_cot.demo.dataset import Filter, Spec

    every = Spec("count", "How many shapes are there?", first=Filter())
    stages = write_stages(every, _three_objects())
    assert stages[Stage.SUMMARY].startswith("The question asks how many objects there are.")
    assert stages[Stage.REASONING] == (
        "Count all: large red square at top left 1; small blue circle at center 2; "
        "small red square at bottom right 3. That is 3."
    )
    there = Spec("exists", "Is there a blue circle?", first=Filter(colour="blue", shape="circle"))
    assert write_stages(there, _three_objects())[Stage.CONCLUSION] == "yes"
    absent = Spec("exists", "Is there a green shape?", first=Filter(colour="green"))
    stages = write_stages(absent, _three_objects())
    assert stages[Stage.REASONING].endswith("There is no green object, so no.")
    describe = Spec("describe", "Describe the picture.")
    stages = write_stages(describe, _three_objects())
    assert stages[Stage.CONCLUSION] == (
        "large red square at top left; small blue circle at center; small red square at bottom right"
    )
    thing = Spec("attribute", "What colour is the circle?", first=Filter(shape="circle"), attribute="colour")
    assert write_stages(thing, _three_objects())[Stage.CONCLUSION] == "blue"


def test_a_description_is_right_when_it_lists_exactly_the_scenes_objects() -> None:
    example = next(e for e in examples("test", 200) if e.kind == "describe")
    assert is_correct(example.answer, example)
    listed = example.answer.split("; ")
    assert is_correct("; ".join(reversed(listed)), example)
    assert not is_correct("; ".join(listed[:-1]) or "nothing", example)
    assert not is_correct(
        example.answer.replace("small", "large", 1).replace("large", "small", 1)
        + "; large red circle at center",
        example,
    )


def test_small_talk_with_a_drawing_is_refused_after_the_drawings_caption() -> None:
    from langchain_llava_cot.demo.off_domain import NOVEL_SMALL_TALK, SMALL_TALK, off_domain_stages

    stages = off_domain_stages("drawing", "1 object: small red circle at center.")
    assert stages[Stage.CAPTION] == "1 object: small red circle at center."
    assert "shapes in the picture" in stages[Stage.CONCLUSION]
    assert not set(NOVEL_SMALL_TALK) & set(SMALL_TALK)
