"""What the model reads: prepared prompts as batches, and their pictures' features.

:class:`Inputs` owns the image feature cache (:mod:`.vision_cache`) and turns the
:class:`~.prompts.Prompt` objects that callers prepared into model inputs, without
running the processor again: :meth:`Inputs.batch` left-pads their token ids and joins
their image inputs as the processor joins a batch's (:func:`join_image_inputs`);
:meth:`Inputs.encode` then gives pictures already seen as cached features instead of
pixels where the model allows it; :meth:`Inputs.store` encodes a batch's new pictures
for the prefix cache's readers, and :meth:`Inputs.extras` gives one prompt's image inputs
when it is read alone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_llava_cot.backends.transformers.prompts import Prompt, pictures_of
from langchain_llava_cot.backends.transformers.vision_cache import ImageFeatureCache

__all__ = ["Inputs", "join_image_inputs"]

_SEQUENCE_INPUTS = ("cross_attention_mask",)
"""Image inputs laid out along the prompt's tokens (dimension 1): left-padded as the ids are."""


class Inputs:
    """Batches of prepared prompts, and the image cache of one model (used by the worker thread only)."""

    def __init__(self, model: Any, *, pad_token_id: int, max_cached_images: int) -> None:
        self._model = model
        self._pad_token_id = pad_token_id
        self.images = ImageFeatureCache(model, max_images=max_cached_images)

    def batch(self, prompts: Sequence[Prompt]) -> dict[str, Any]:
        """The prompts as one left-padded batch on the model's device, as the processor would give it."""
        import torch

        width = max(len(prompt.ids) for prompt in prompts)
        pads = [width - len(prompt.ids) for prompt in prompts]
        batch: dict[str, Any] = {
            "input_ids": torch.tensor([[self._pad_token_id] * pad + p.ids for p, pad in zip(prompts, pads)]),
            "attention_mask": torch.tensor([[0] * pad + [1] * len(p.ids) for p, pad in zip(prompts, pads)]),
            **join_image_inputs([prompt.inputs for prompt in prompts], pads),
        }
        return self._on_device(batch)

    def encode(self, prompts: Sequence[Prompt]) -> dict[str, Any]:
        """:meth:`batch`, with pictures already seen as cached features instead of pixels where possible."""
        return self.images.apply(self.batch(prompts), pictures_of(prompts))

    def store(self, prompts: Sequence[Prompt]) -> None:
        """Encode the prompts' pictures not cached yet, in one call, and mark the others as just used."""
        if not self.images.supported:
            return
        new = [p for p in prompts if p.key and not all(self.images.holds(key) for key in p.key)]
        if new:
            self.images.store(self.batch(new), pictures_of(new))
        self.images.touch([key for prompt in prompts for key in prompt.key])

    def extras(self, prompt: Prompt) -> dict[str, Any]:
        """One prompt's image inputs (cached features where possible), for reading it alone."""
        if not prompt.inputs:
            return {}
        encoded = self.images.apply(self._on_device(dict(prompt.inputs)), prompt.conversation.images)
        return {k: v for k, v in encoded.items() if k not in ("input_ids", "attention_mask")}

    def close(self) -> None:
        """Release the image feature cache."""
        self.images.close()

    def _on_device(self, inputs: dict[str, Any]) -> dict[str, Any]:
        """Tensors moved to the model's device; floating ones in its dtype."""
        device, dtype = self._model.device, self._model.dtype
        return {
            name: value.to(device, dtype=dtype) if value.is_floating_point() else value.to(device)
            for name, value in inputs.items()
        }


def join_image_inputs(inputs: Sequence[dict[str, Any]], pads: Sequence[int]) -> dict[str, Any]:
    """Several prompts' image inputs as the processor gives them for a batch of those prompts.

    Pixels laid out one entry per picture (4-D ``pixel_values``: LLaVA) are concatenated,
    prompts without pictures adding none. Inputs laid out one row per prompt (Mllama,
    Idefics3) are zero-padded to the largest picture count and tile count and stacked; a
    prompt without pictures gets a row of zeros, and ``cross_attention_mask`` is left-padded
    by ``pads[i]`` positions, as its ids are. Mllama's ``aspect_ratio_mask`` marks the first
    tile of a padded picture slot, as its image processor does.
    """
    import torch

    names = list(dict.fromkeys(name for one in inputs for name in one))
    joined: dict[str, Any] = {}
    for name in names:
        present = [one[name] for one in inputs if name in one]
        if name == "pixel_values" and present[0].dim() == 4:
            joined[name] = torch.cat(present)
            continue
        rows = []
        for one, pad in zip(inputs, pads):
            value = one.get(name)
            if value is None:
                value = present[0].new_zeros((1, *([0] * (present[0].dim() - 1))))
            if name in _SEQUENCE_INPUTS:
                value = torch.nn.functional.pad(value, (0,) * 2 * (value.dim() - 2) + (pad, 0))
            rows.append(value)
        joined[name] = _stack_padded(rows, name)
    return joined


def _stack_padded(rows: list[Any], name: str) -> Any:
    """Rows of one batch entry each, zero-padded at the end of every dimension but the first, stacked."""
    import torch

    shape = [max(row.shape[d] for row in rows) for d in range(1, rows[0].dim())]
    padded = []
    for row in rows:
        grown = row.new_zeros((row.shape[0], *shape))
        grown[tuple(slice(0, size) for size in row.shape)] = row
        if name == "aspect_ratio_mask" and row.dim() == 3:
            grown[:, row.shape[1] :, 0] = 1  # a padded picture slot has one tile, as Mllama pads it
        padded.append(grown)
    return torch.cat(padded)
