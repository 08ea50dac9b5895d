"""Each prompt prepared once, in the caller's thread: the picture, the template, the tokens, the pixels.

:class:`Prompts` turns a request into the :class:`Prompt` objects the worker reads, before
the request is queued:

1. each picture is decoded (:func:`~langchain_llava_cot.images.decode_image`, which
   keeps the picture that validation decoded) and keyed by its content
   (:func:`~langchain_llava_cot.images.image_key`, the key of every cache here);
2. the conversation is rendered with the chat template, then the assistant's prefix;
3. the processor reads that one prompt: its token ids (image placeholders expanded),
   where its image tokens are, and its image inputs (pixels, Mllama's tile mask). The
   image processor's output for a prompt's pictures is remembered by their keys
   (:class:`ProcessedPictures`), so a search's later stages and judge prompts, which ask
   about the same picture in other words, reuse it.

A :class:`SampleRequest` becomes a :class:`PreparedSample`; a :class:`ChoiceRequest` a
:class:`PreparedChoice`, with the tokens each option adds and, when an option is longer
than one token, a prompt per option. The worker (:mod:`.inputs`) never runs the
processor or the chat template again: it batches these prompts.

Callers of one backend may prepare at the same time: one lock serialises the processor,
whose tokenizer is a copy of its own (the worker decodes with the model's).
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from langchain_llava_cot.backends.base import ChoiceRequest, SampleRequest
from langchain_llava_cot.conversation import Conversation, to_chat_messages
from langchain_llava_cot.images import decode_image, image_key

__all__ = ["PreparedChoice", "PreparedSample", "ProcessedPictures", "Prompt", "Prompts"]

REMEMBERED_PICTURES = 16
"""Prompts' picture sets whose processed pixels are kept: those of the requests in flight."""


@dataclass(frozen=True)
class Prompt:
    """One prompt as the model reads it: token ids, image positions and image inputs."""

    conversation: Conversation
    text: str
    """The assistant's text after the generation prompt (the request's prefix)."""
    ids: list[int]
    """The prompt's token ids, image placeholders expanded, without padding."""
    key: tuple[str, ...]
    """Content keys of the prompt's pictures: the prefix cache's namespace."""
    images: tuple[int, ...]
    """Positions of the image tokens in ``ids``."""
    inputs: dict[str, Any]
    """The processor's image inputs for this prompt alone (on the CPU; empty without pictures)."""
    tiles: Any = None
    """Mllama, one picture: its ``[1, tiles]`` cross-attention mask row (None otherwise)."""


@dataclass(frozen=True)
class PreparedSample:
    """A sample request and its prompt."""

    request: SampleRequest
    prompt: Prompt


@dataclass(frozen=True)
class PreparedChoice:
    """A choice request, its prompt, and what each option adds to it."""

    request: ChoiceRequest
    prompt: Prompt
    options: tuple[tuple[int, ...], ...]
    """Per option, the tokens it adds after the prompt."""
    option_prompts: tuple[Prompt, ...] = ()
    """Prompt + option, per option; made only when an option is longer than one token."""

    @property
    def single(self) -> bool:
        """Whether every option is one token (read from the prompt's last logits)."""
        return all(len(tokens) == 1 for tokens in self.options)


class Prompts:
    """Prepares the prompts of one model's requests (any thread)."""

    def __init__(self, processor: Any, *, image_token_id: int | None, remember_pictures: bool) -> None:
        self.processor = _own_processor(processor, remember=remember_pictures)
        self.tokenizer = self.processor.tokenizer
        self._image_token_id = image_token_id
        self._lock = threading.Lock()

    @property
    def image_processor_runs(self) -> int | None:
        """Times the image processor ran (remembered outputs do not count); None when not counted."""
        remembered = getattr(self.processor, "image_processor", None)
        return remembered.runs if isinstance(remembered, ProcessedPictures) else None

    def close(self) -> None:
        """Forget the remembered pixels."""
        remembered = getattr(self.processor, "image_processor", None)
        if isinstance(remembered, ProcessedPictures):
            remembered.clear()

    def sample(self, request: SampleRequest) -> PreparedSample:
        """The request with its prompt."""
        return PreparedSample(request, self.prompt(request.conversation, request.prefix))

    def choice(self, request: ChoiceRequest) -> PreparedChoice:
        """The request with its prompt, its options' tokens, and prompt + option where an option is long."""
        prompt = self.prompt(request.conversation, request.prefix)
        options = tuple(tuple(self.option_tokens(prompt.text, option)) for option in request.options)
        prepared = PreparedChoice(request, prompt, options)
        if prepared.single:
            return prepared
        option_prompts = tuple(self.prompt(request.conversation, request.prefix + o) for o in request.options)
        return PreparedChoice(request, prompt, options, option_prompts)

    def prompt(self, conversation: Conversation, prefix: str) -> Prompt:
        """The conversation and ``prefix`` as the model reads them, processed once."""
        pictures = [decode_image(image) for image in conversation.images]
        keys = tuple(image_key(image) for image in conversation.images)
        text = self.render(conversation, prefix)
        kwargs: dict[str, Any] = {"text": [text], "return_tensors": "pt"}
        if pictures:
            kwargs["images"] = [pictures]
        with self._lock:
            remembered = getattr(self.processor, "image_processor", None)
            if isinstance(remembered, ProcessedPictures):
                remembered.expect(keys)
            try:
                processed = self.processor(**kwargs, add_special_tokens=False)
            finally:
                if isinstance(remembered, ProcessedPictures):
                    remembered.expect(None)
        ids = processed["input_ids"][0].tolist()
        images = tuple(i for i, token in enumerate(ids) if token == self._image_token_id)
        inputs = {k: v for k, v in processed.items() if k not in ("input_ids", "attention_mask")}
        tiles = inputs.get("cross_attention_mask")
        if tiles is not None and len(images) == 1:
            tiles = tiles[0, -1, :1]  # its picture's tiles, as its last token sees them
        else:
            tiles = None
        return Prompt(conversation, text, ids, keys, images, inputs, tiles)

    def render(self, conversation: Conversation, prefix: str) -> str:
        """The chat-templated conversation with the generation prompt, then ``prefix``.

        Bound tools go through the chat template when it has a tool format (it mentions
        ``tools``), otherwise through the package's tools prompt in the system turn.
        """
        native_tools = bool(conversation.tools) and "tools" in (self.processor.chat_template or "")
        messages = to_chat_messages(conversation, tools_in_template=native_tools)
        with self._lock:
            template = self.processor.apply_chat_template(
                messages,
                tools=list(conversation.tools) if native_tools else None,
                add_generation_prompt=True,
                tokenize=False,
            )
        return template + prefix

    def option_tokens(self, prompt: str, option: str) -> list[int]:
        """The tokens ``option`` adds after ``prompt`` when both are tokenized together."""
        with self._lock:
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


class ProcessedPictures:
    """An image processor that remembers its output for a prompt's pictures, by their content keys.

    One search asks about the same picture at every stage and in every judge prompt, and
    each prompt is processed alone (:meth:`Prompts.prompt`), so the picture's pixels are
    made once and reused. Before each call the caller names the content keys of the
    pictures it passes (:meth:`expect`); an output is kept under those keys and the
    call's settings, the newest ``size`` kept. A call with no keys named runs the wrapped
    processor as usual. Each caller gets a shallow copy (some processors pop keys from it).
    """

    def __init__(self, inner: Any, *, size: int = REMEMBERED_PICTURES) -> None:
        self._inner = inner
        self._size = size
        self._kept: OrderedDict[tuple, Any] = OrderedDict()
        self._keys: tuple[str, ...] | None = None
        self.runs = 0
        """Times the wrapped image processor ran."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__") or name in ("_inner", "_kept", "_size", "_keys"):
            raise AttributeError(name)  # copy and pickle look these up before __init__ has run
        return getattr(self._inner, name)

    def expect(self, keys: tuple[str, ...] | None) -> None:
        """The content keys of the pictures the next call passes, in order (None: unknown)."""
        self._keys = keys

    def __call__(self, images: Any, *args: Any, **kwargs: Any) -> Any:
        """The wrapped processor's output for ``images``, remembered by the pictures' keys."""
        if not self._keys:
            self.runs += 1
            return self._inner(images, *args, **kwargs)
        key = (self._keys, _nesting(images), repr(args), repr(sorted(kwargs.items())))
        found = self._kept.get(key)
        if found is None:
            self.runs += 1
            found = self._kept[key] = self._inner(images, *args, **kwargs)
            while len(self._kept) > self._size:
                self._kept.popitem(last=False)
        self._kept.move_to_end(key)
        return copy.copy(found)

    def clear(self) -> None:
        """Forget every remembered output."""
        self._kept.clear()


def _nesting(images: Any) -> tuple[int, ...]:
    """How ``images`` is nested in lists: the length at each level of its first branch."""
    shape = []
    while isinstance(images, (list, tuple)):
        shape.append(len(images))
        if not images:
            break
        images = images[0]
    return tuple(shape)


def _own_processor(processor: Any, *, remember: bool) -> Any:
    """A shallow copy of ``processor`` with its own tokenizer, and an image processor that remembers.

    The processor given is left as it is (the worker decodes with its tokenizer); one
    that is already remembering gets a fresh memory of its own. Without ``remember``
    the image processor is the plain one.
    """
    own = copy.copy(processor)
    own.tokenizer = copy.deepcopy(processor.tokenizer)
    inner = getattr(processor, "image_processor", None)
    if inner is None:
        return own
    if isinstance(inner, ProcessedPictures):
        inner = inner._inner
    own.image_processor = ProcessedPictures(inner) if remember else inner
    return own


def pictures_of(prompts: Sequence[Prompt]) -> list[bytes]:
    """Every picture of the prompts, prompt by prompt, in the order the processor saw them."""
    return [image for prompt in prompts for image in prompt.conversation.images]
