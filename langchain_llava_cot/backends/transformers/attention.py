"""Where a model's pictures live in its KV cache, chosen once per model.

Most VLMs (LLaVA, Qwen-VL, ...) put a picture's features among the prompt's tokens, so
a prompt's cache is its self-attention keys and values and nothing more:
:class:`SelfAttention`. Mllama (LLaVA-CoT's architecture) reads its picture through
cross-attention layers whose states do not follow the prompt's positions:
:class:`CrossAttention` keeps only the self-attention layers in the prefix cache and
gives every batch cache built from it each row's picture from the image cache, with
a ``cross_attention_mask`` made as the processor makes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_llava_cot.backends.transformers.inputs import Inputs
from langchain_llava_cot.backends.transformers.prefix_cache import Layers, growing_cache, kv_layers
from langchain_llava_cot.backends.transformers.prompts import Prompt
from langchain_llava_cot.backends.transformers.vision_cache import ImageFeatureCache, cross_attention_layers


class SelfAttention:
    """Every decoder layer attends to the prompt's own tokens, picture features included."""

    can_prefill = True
    """Whether a prompt's cache can be read once and reused."""

    def holds(self, prompt: Prompt) -> bool:
        """Whether the cache can reuse a prompt whose image tokens were found: always, here."""
        return True

    def layers(self, cache: Any) -> Layers | None:
        """The cache's reusable (self-attention) keys and values."""
        return kv_layers(cache)

    def cache(
        self, states: Sequence[tuple[Any, Any]] | None, prompts: Sequence[Prompt], repeats: Sequence[int]
    ) -> Any:
        """A batch cache holding ``states`` (per self-attention layer; None: empty)."""
        return growing_cache(states or ())

    def mask(self, prompts: Sequence[Prompt], starts: Sequence[int], width: int) -> dict[str, Any]:
        """Extra inputs that say which positions see a picture: none here."""
        return {}

    def read_alone(self, prompt: Prompt, start: int, length: int, inputs: Inputs) -> dict[str, Any]:
        """The image inputs for reading ``prompt.ids[start:length]`` at batch size 1.

        A span that holds the prompt's image tokens needs their features.
        """
        return inputs.extras(prompt) if prompt.images and prompt.images[-1] >= start else {}


class CrossAttention(SelfAttention):
    """Mllama: pictures in cross-attention layers, one picture per prompt, from the image cache."""

    def __init__(self, model: Any, cross_layers: tuple[int, ...], images: ImageFeatureCache) -> None:
        self._cross_layers = cross_layers
        self._layer_count = model.config.get_text_config(decoder=True).num_hidden_layers
        self._device = model.device
        self._images = images
        self.can_prefill = 0 not in cross_layers  # transformers measures a cache's length on layer 0

    def holds(self, prompt: Prompt) -> bool:
        """One picture, its tiles known and its states in the image cache."""
        return prompt.tiles is not None and self._images.holds(prompt.key[0])

    def layers(self, cache: Any) -> Layers | None:
        """The cache's self-attention keys and values (the picture's layers are skipped)."""
        return kv_layers(cache, skip=self._cross_layers)

    def cache(
        self, states: Sequence[tuple[Any, Any]] | None, prompts: Sequence[Prompt], repeats: Sequence[int]
    ) -> Any:
        """A batch cache holding ``states``; its cross-attention layers hold the rows' pictures.

        ``prompts[i]``'s picture fills ``repeats[i]`` rows.
        """
        own = iter(states or ())
        per_layer = [None if i in self._cross_layers else next(own, None) for i in range(self._layer_count)]
        pictures: dict[int, tuple[Any, Any]] = {}
        if any(prompt.images for prompt in prompts):
            rows = [prompt for prompt, n in zip(prompts, repeats) for _ in range(n)]
            keys = [prompt.key[0] if prompt.images else None for prompt in rows]
            pictures = dict(zip(self._cross_layers, self._images.cross_attention_states(keys)))
        return growing_cache(per_layer, fixed=pictures)

    def mask(self, prompts: Sequence[Prompt], starts: Sequence[int], width: int) -> dict[str, Any]:
        """``cross_attention_mask`` for ``width`` positions of each prompt from ``starts[i]``.

        A position sees its prompt's picture (the tiles the processor marked) from the
        image token on, as the processor's own mask does; positions before it, left
        padding (negative positions) and prompts without a picture see none. Empty when
        no prompt has a picture.
        """
        import torch

        tiles = next((prompt.tiles for prompt in prompts if prompt.tiles is not None), None)
        if tiles is None:
            return {}
        rows = []
        for prompt, start in zip(prompts, starts):
            if prompt.tiles is None:
                rows.append(torch.zeros(width, *tiles.shape, dtype=tiles.dtype, device=tiles.device))
                continue
            positions = torch.arange(start, start + width, device=tiles.device)
            seen = (positions >= prompt.images[0]).to(tiles.dtype)
            rows.append(seen[:, None, None] * prompt.tiles)
        return {"cross_attention_mask": torch.stack(rows).to(self._device)}

    def read_alone(self, prompt: Prompt, start: int, length: int, inputs: Inputs) -> dict[str, Any]:
        """The picture comes from the cache; only its mask is needed."""
        return self.mask([prompt], [start], length - start)


def attention_of(model: Any, images: ImageFeatureCache) -> SelfAttention:
    """The strategy for ``model``: :class:`CrossAttention` when it has cross-attention layers."""
    cross_layers = cross_attention_layers(model)
    return CrossAttention(model, cross_layers, images) if cross_layers else SelfAttention()
