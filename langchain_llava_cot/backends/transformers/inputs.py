"""What the model reads: chat-templated prompts, their tokens, and their pictures' inputs.

:class:`Inputs` owns the processor, its tokenizer and the image feature cache. A
(conversation, prefix) pair becomes the chat template's text with the generation
prompt, then the prefix; a batch of pairs becomes the processor's left-padded tensors,
with pictures already seen given as cached features (:meth:`Inputs.encode`), or
:class:`Prompt` rows of token ids for the prefix cache (:meth:`Inputs.prompts`).
"""

from __future__ import annotations

import copy
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_llava_cot.backends.transformers.vision_cache import ImageFeatureCache, image_token_id
from langchain_llava_cot.conversation import Conversation, to_chat_messages
from langchain_llava_cot.images import decode_image, image_key

Pair = tuple[Conversation, str]
"""A conversation and the text that follows its generation prompt."""


@dataclass
class Prompt:
    """One prompt as the model reads it: token ids, image positions and image inputs."""

    conversation: Conversation
    text: str
    ids: list[int]
    key: tuple[str, ...]
    """Content keys of the prompt's images: the prefix cache's namespace."""
    images: tuple[int, ...]
    """Positions of the image tokens in ``ids``."""
    inputs: dict[str, Any] | None = None
    """The processor's image inputs (features or pixels) for this prompt alone."""
    tiles: Any = None
    """Mllama, one picture: its ``[1, tiles]`` cross-attention mask row (None otherwise)."""

    def extras(self, inputs: Inputs) -> dict[str, Any]:
        """The image inputs, made on first use."""
        if self.inputs is None:
            encoded = inputs.encode([(self.conversation, self.text)])
            self.inputs = {k: v for k, v in encoded.items() if k not in ("input_ids", "attention_mask")}
        return self.inputs


class Inputs:
    """The processor and image cache of one model (used by the worker thread only)."""

    def __init__(self, model: Any, processor: Any, *, max_cached_images: int) -> None:
        self._model = model
        self.processor = _remembering_pictures(processor, remember=max_cached_images > 0)
        self.tokenizer = processor.tokenizer
        self.images = ImageFeatureCache(model, max_images=max_cached_images)
        self._image_token_id = image_token_id(model)

    def prompt(self, conversation: Conversation, prefix: str) -> str:
        """The chat-templated conversation with the generation prompt, then ``prefix``.

        Bound tools go through the chat template when it has a tool format (it mentions
        ``tools``), otherwise through the package's tools prompt in the system turn.
        """
        native_tools = bool(conversation.tools) and "tools" in (self.processor.chat_template or "")
        messages = to_chat_messages(conversation, tools_in_template=native_tools)
        template = self.processor.apply_chat_template(
            messages,
            tools=list(conversation.tools) if native_tools else None,
            add_generation_prompt=True,
            tokenize=False,
        )
        return template + prefix

    def encode(self, pairs: list[Pair]) -> dict[str, Any]:
        """Process pairs into one left-padded batch on the model's device.

        Images already seen come as cached features (``mm_encoder_outputs``) instead
        of pixels where the model allows it.
        """
        return self.images.apply(self.process(pairs), pictures_of(pairs))

    def process(self, pairs: list[Pair]) -> Any:
        """The processor's left-padded batch for the pairs, on the model's device."""
        texts = [self.prompt(conversation, prefix) for conversation, prefix in pairs]
        images = [[decode_image(image) for image in conversation.images] for conversation, _ in pairs]
        kwargs: dict[str, Any] = {"text": texts, "padding": True, "return_tensors": "pt"}
        if any(images):
            kwargs["images"] = images
        inputs = self.processor(**kwargs, add_special_tokens=False, padding_side="left")
        return inputs.to(self._model.device, dtype=self._model.dtype)

    @property
    def image_processor_runs(self) -> int | None:
        """Times the image processor ran (remembered outputs do not count); None when not counted."""
        remembered = getattr(self.processor, "image_processor", None)
        return remembered.runs if isinstance(remembered, RememberedPictures) else None

    def close(self) -> None:
        """Release the image feature cache and the remembered pixels."""
        self.images.close()
        remembered = getattr(self.processor, "image_processor", None)
        if isinstance(remembered, RememberedPictures):
            remembered.clear()

    def prompts(self, pairs: list[Pair]) -> list[Prompt]:
        """Each pair tokenized in one processor call, padding removed.

        New pictures are encoded into the image cache here, in one call; a prompt's own
        image inputs are made again if it is read alone (:meth:`Prompt.extras`).
        """
        inputs = self.process(pairs)
        self.images.store(inputs, pictures_of(pairs))
        tiles = inputs.get("cross_attention_mask")
        rows = []
        for row, ((conversation, text), ids, mask) in enumerate(
            zip(pairs, inputs["input_ids"].tolist(), inputs["attention_mask"].tolist())
        ):
            kept = [token for token, keep in zip(ids, mask) if keep]
            images = tuple(i for i, token in enumerate(kept) if token == self._image_token_id)
            prompt = Prompt(conversation, text, kept, conversation_keys(conversation), images)
            if tiles is not None and len(images) == 1:
                prompt.tiles = tiles[row, -1, :1]  # its picture's tiles, as its last token sees them
            rows.append(prompt)
        return rows

    def option_tokens(self, prompt: str, option: str) -> list[int]:
        """The tokens ``option`` adds after ``prompt`` when both are tokenized together."""
        before = self.tokenizer.encode(prompt, add_special_tokens=False)
        after = self.tokenizer.encode(prompt + option, add_special_tokens=False)
        common = 0
        for a, b in zip(before, after):
            if a != b:
                break
            common += 1
        if common == len(after):
            msg = f"Option {option!r} adds no token after the prefix. Use a non-empty option text."
            raise ValueError(msg)
        return after[common:]


def pictures_of(pairs: Sequence[Pair]) -> list[bytes]:
    """Every picture of the pairs, row by row, in the order the processor sees them."""
    return [image for conversation, _ in pairs for image in conversation.images]


def conversation_keys(conversation: Conversation) -> tuple[str, ...]:
    """Content keys of the conversation's pictures, in order."""
    return tuple(image_key(image) for image in conversation.images)


class RememberedPictures:
    """An image processor that remembers what it made for the last few single pictures.

    One search asks about the same picture at every stage (each stage's prompt is read
    once, alone), and the picture arrives as the same decoded object each time
    (:func:`decode_image` keeps them), so its pixels are processed once and reused.
    Calls over several pictures (a judge round over several copies, whole-prompt
    batches of ``n`` rows) run the wrapped processor as usual, so what is kept stays
    the size of ``size`` pictures. Outputs are keyed by the picture's identity and the
    call's settings; an entry holds its picture, so an identity cannot be reused while
    it is kept. Each caller gets a shallow copy (some processors pop keys from it).
    """

    def __init__(self, inner: Any, *, size: int = 8) -> None:
        self._inner = inner
        self._size = size
        self._kept: OrderedDict[tuple, tuple[Any, Any]] = OrderedDict()
        self.runs = 0
        """Times the wrapped image processor ran."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_inner", "_kept", "_size"):
            raise AttributeError(name)  # copy and pickle look these up before __init__ has run
        return getattr(self._inner, name)

    def __call__(self, images: Any, *args: Any, **kwargs: Any) -> Any:
        """The wrapped processor's output for ``images``; a single picture's is remembered."""
        picture = _single_picture(images)
        if picture is None:
            self.runs += 1
            return self._inner(images, *args, **kwargs)
        key = (id(picture), _nesting(images), repr(args), repr(sorted(kwargs.items())))
        found = self._kept.get(key)
        if found is None:
            self.runs += 1
            found = (picture, self._inner(images, *args, **kwargs))
            self._kept[key] = found
            while len(self._kept) > self._size:
                self._kept.popitem(last=False)
        self._kept.move_to_end(key)
        return copy.copy(found[1])

    def clear(self) -> None:
        """Forget every remembered output."""
        self._kept.clear()


def _single_picture(images: Any) -> Any:
    """The one picture of ``images`` (however nested in lists), or None when there are more."""
    while isinstance(images, (list, tuple)):
        if len(images) != 1:
            return None
        images = images[0]
    return images


def _nesting(images: Any) -> int:
    """How deep the single picture of ``images`` sits in lists."""
    depth = 0
    while isinstance(images, (list, tuple)):
        images, depth = images[0], depth + 1
    return depth


def _remembering_pictures(processor: Any, *, remember: bool) -> Any:
    """A shallow copy of ``processor`` whose image processor remembers single pictures.

    The processor given is left as it is; one that is already remembering gets a
    fresh memory of its own. Without ``remember`` or an image processor, the copy is
    the plain processor.
    """
    inner = getattr(processor, "image_processor", None)
    if inner is None:
        return processor
    if isinstance(inner, RememberedPictures):
        inner = inner._inner
    plain = copy.copy(processor)
    plain.image_processor = RememberedPictures(inner) if remember else inner
    return plain
