"""The bundled demo model: a tiny LLaVA trained by this project on drawn shapes.

It is a demo of the library on a laptop CPU, not a general vision-language model: it
reads pictures of any size of up to six circles, squares and triangles in four colours,
drawn anywhere on a light background (see :mod:`langchain_llava_cot.demo.dataset`), and
questions about them in many wordings; it says so in four stages when asked anything
else, and was trained on the verifier's and the pairwise judge's prompt formats, so both
judges run for real on it.
``ChatLlavaCoT()`` with no ``model`` uses it; ``python -m langchain_llava_cot.demo.train``
rebuilds it.

>>> from langchain_llava_cot.demo import DEMO_QUESTION, demo_image_path
>>> demo_image_path().name, DEMO_QUESTION
('example.png', 'How many red squares are there?')
"""

from __future__ import annotations

from pathlib import Path

from langchain_llava_cot.bundled import DEMO_MODEL_PATH

__all__ = [
    "DEMO_ANSWER",
    "DEMO_MODEL_PATH",
    "DEMO_QUESTION",
    "EXAMPLE_IMAGE",
    "demo_image_path",
]

_HERE = Path(__file__).resolve().parent

EXAMPLE_IMAGE: Path = _HERE / "example.png"
"""The bundled example picture (a held-out test scene, 299x299 PNG); :data:`DEMO_QUESTION` asks about it.

Its scene, the truth the tests check answers against, is
:func:`~langchain_llava_cot.demo.dataset.bundled_example`."""

DEMO_QUESTION = "How many red squares are there?"
"""The question that goes with :func:`demo_image_path`."""

DEMO_ANSWER = "2"
"""The right answer to :data:`DEMO_QUESTION`."""


def demo_image_path() -> Path:
    """The bundled example picture (:data:`EXAMPLE_IMAGE`)."""
    return EXAMPLE_IMAGE
