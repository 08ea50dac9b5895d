"""The small pictures and conversations the transformers backend tests ask about."""

import io

from PIL import Image, ImageDraw

from langchain_llava_cot.conversation import Conversation, Turn


def png(colour: str, shape: str = "circle", size: tuple[int, int] = (80, 60)) -> bytes:
    """A white PNG with one ``colour`` circle (or square) near its top left."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    box = (10, 10, 40, 40)
    if shape == "circle":
        draw.ellipse(box, fill=colour)
    else:
        draw.rectangle(box, fill=colour)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


RED_CIRCLE = Conversation((Turn("user", "How many circles?", (png("red"),)),))
BLUE_SQUARE = Conversation(
    (
        Turn(
            "user",
            "What colour is the square on the left of the picture, and is it big?",
            (png("blue", "sq"),),
        ),
    )
)
TEXT_ONLY = Conversation((Turn("user", "Is a triangle a shape?"),))
