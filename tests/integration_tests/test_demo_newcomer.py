"""The bundled demo model on what a newcomer brings: pictures drawn here by hand, questions in everyday words.

Nothing below comes from the project's generator: the pictures are drawn with PIL at
hand-picked places, sizes and colours (pure colours, a transparent background, a wide
picture, a JPEG), and the questions are worded as a person would ask them.
"""

from __future__ import annotations

import io

import pytest
from PIL import Image, ImageDraw

from langchain_llava_cot import ChatLlavaCoT
from langchain_llava_cot.demo import EXAMPLE_IMAGE
from langchain_llava_cot.demo.dataset import bundled_example
from langchain_llava_cot.demo.off_domain import NOVEL_SMALL_TALK
from langchain_llava_cot.images import image_message
from langchain_llava_cot.stages import Stage


def _picture(size: tuple[int, int], shapes: list[tuple], background=(255, 255, 255), fmt="PNG") -> bytes:
    """Draw ``shapes`` (kind, colour, centre x, centre y, radius, in pixels) and encode the picture."""
    mode = "RGBA" if len(background) == 4 else "RGB"
    image = Image.new(mode, size, background)
    draw = ImageDraw.Draw(image)
    for kind, colour, x, y, r in shapes:
        box = [x - r, y - r, x + r, y + r]
        if kind == "circle":
            draw.ellipse(box, fill=colour)
        elif kind == "square":
            draw.rectangle(box, fill=colour)
        else:
            draw.polygon([(x, y - r), (x - r, y + r), (x + r, y + r)], fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format=fmt)
    return buffer.getvalue()


RED, GREEN, BLUE, YELLOW = (255, 0, 0), (0, 160, 0), (0, 0, 255), (255, 220, 0)

# A 400x300 white picture: red circle top left, blue square top right, two red squares at the
# bottom (left and middle), a green triangle in the centre.
STREET = _picture(
    (400, 300),
    [
        ("circle", RED, 60, 50, 28),
        ("square", BLUE, 340, 60, 30),
        ("square", RED, 70, 240, 22),
        ("square", RED, 200, 250, 24),
        ("triangle", GREEN, 200, 150, 30),
    ],
)
# A transparent 256x256 PNG: a large yellow circle in the middle, a small blue triangle bottom right.
CLEAR = _picture(
    (256, 256), [("circle", YELLOW, 128, 128, 40), ("triangle", BLUE, 215, 215, 16)], background=(0, 0, 0, 0)
)
# A wide 480x270 JPEG on light grey: three blue circles in a row across the middle.
WIDE = _picture(
    (480, 270),
    [("circle", BLUE, 80, 135, 22), ("circle", BLUE, 240, 135, 22), ("circle", BLUE, 400, 135, 22)],
    background=(235, 235, 235),
    fmt="JPEG",
)

QUESTIONS = [
    (STREET, "How many shapes are there?", "5"),
    (STREET, "How many red shapes are there?", "3"),
    (STREET, "How many squares can you see?", "3"),
    (STREET, "What colour is the triangle?", "green"),
    (STREET, "Is there a blue circle?", "no"),
    (STREET, "What color is the shape in the top right?", "blue"),
    (STREET, "Is the red circle above the green triangle?", "yes"),
    (CLEAR, "How many objects are in this picture?", "2"),
    (CLEAR, "What shape is the yellow object?", "circle"),
    (WIDE, "How many circles are there?", "3"),
]


@pytest.fixture(scope="module")
def llm() -> ChatLlavaCoT:
    return ChatLlavaCoT(strategy="greedy")


def test_hand_drawn_pictures_and_everyday_questions(llm: ChatLlavaCoT) -> None:
    from langchain_llava_cot.demo.scoring import normalize_answer

    answers = llm.batch([[image_message(picture, question)] for picture, question, _ in QUESTIONS])
    wrong = [
        (question, answer.content)
        for (_, question, expected), answer in zip(QUESTIONS, answers)
        if normalize_answer(str(answer.content)) != expected
    ]
    assert len(wrong) <= 2, wrong


def test_small_talk_with_a_picture_gets_the_refusal(llm: ChatLlavaCoT) -> None:
    """The first ten held-out requests, each with a drawing: 10 of 10 refused. All twenty, with
    both drawings, are measured too (printed with -s; the README quotes the figure)."""
    requests = [[image_message(picture, text)] for text in NOVEL_SMALL_TALK for picture in (CLEAR, STREET)]
    answers = llm.batch(requests)
    refused = [str(a.content).startswith("I can only answer questions about") for a in answers]
    first_ten = [
        refused[2 * i + i % 2] for i in range(10)
    ]  # CLEAR, STREET, CLEAR, ... as a newcomer alternates
    missed = [(r[0].content[-1]["text"], a.content) for r, a, ok in zip(requests, answers, refused) if not ok]  # type: ignore[index]
    print(f"\nheld-out small talk with a drawing: {sum(refused)} of {len(refused)} refused; missed: {missed}")
    assert all(first_ten), missed
    assert sum(refused) >= 30, missed  # 33 of 40 when the bundled model was trained


README_QUESTIONS = [
    ("How many shapes are there?", "6"),
    ("How many red shapes are there?", "3"),
    ("How many red squares are there?", "2"),
    ("Count the circles.", "2"),
    ("Is there a yellow triangle?", "no"),
    ("What colour is the shape at the top right?", "yellow"),
    ("What shape is the yellow object?", "square"),
    ("Is the blue circle below the yellow square?", "yes"),
    ("Are there more squares than circles?", "yes"),
]
"""The README's example questions about the bundled picture, with their right answers."""


def test_every_readme_question_is_answered_right_on_the_bundled_picture(llm: ChatLlavaCoT) -> None:
    from langchain_llava_cot.demo.scoring import normalize_answer

    picture = EXAMPLE_IMAGE.read_bytes()
    requests = [[image_message(picture, question)] for question, _ in README_QUESTIONS]
    answers = llm.batch(requests)
    wrong = [
        (question, answer.content)
        for (question, expected), answer in zip(README_QUESTIONS, answers)
        if normalize_answer(str(answer.content)) != expected
    ]
    assert not wrong, wrong


@pytest.mark.xfail(
    strict=True,
    reason="the bundled model's description of the bundled picture names the small red square twice "
    "and leaves out the small red circle beside it (two shapes in one part of the grid); the README says so",
)
def test_the_bundled_pictures_description(llm: ChatLlavaCoT) -> None:
    from langchain_llava_cot.demo.scoring import same_answer

    description = llm.invoke([image_message(EXAMPLE_IMAGE.read_bytes(), "Describe the picture.")])
    caption = bundled_example().stages[Stage.CAPTION]
    assert same_answer(str(description.content), caption, "describe"), description.content


def test_a_tool_it_does_not_need_changes_no_answer(llm: ChatLlavaCoT) -> None:
    """Bound to the agent example's ``add``, questions that need no sum are answered as without it."""
    import sys
    from pathlib import Path

    from langchain_llava_cot.demo.scoring import normalize_answer

    sys.path.insert(0, str(Path(__file__).parents[2] / "examples"))
    from agent import add

    picture = EXAMPLE_IMAGE.read_bytes()
    requests = [[image_message(picture, question)] for question, _ in README_QUESTIONS]
    answers = llm.bind_tools([add]).batch(requests)
    wrong = [
        (question, answer.content, answer.tool_calls)  # type: ignore[attr-defined]
        for (question, expected), answer in zip(README_QUESTIONS, answers)
        if answer.tool_calls or normalize_answer(str(answer.content)) != expected  # type: ignore[attr-defined]
    ]
    assert not wrong, wrong
