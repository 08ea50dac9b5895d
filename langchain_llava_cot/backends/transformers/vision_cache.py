"""Encode each distinct image once: an LRU cache of a VLM's image features.

A stage-beam search shows the model the same picture many times: every stage's
``generate`` call (once per candidate row) and every judge forward pass. Left to
itself, ``transformers`` runs the vision tower over all of those copies each time.

:class:`ImageFeatureCache` sits between the processor and the model:

1. the processor still turns each row's text and images into ``input_ids`` (with the
   image placeholder tokens expanded) and ``pixel_values``, one picture per entry;
2. each picture is keyed by the SHA-256 of its encoded bytes; pictures not in the
   cache are encoded together in one ``get_image_features`` call and stored, oldest
   evicted first once ``max_images`` are held;
3. ``pixel_values`` is replaced by ``mm_encoder_outputs={"image": ...}`` holding the
   cached features in the batch's order. transformers (5.x) accepts these
   pre-encoded features in ``forward`` and ``generate`` of the models that support
   them, and scatters them into the image placeholder positions as usual.

It applies where that is cheap and safe: the model's ``forward`` takes
``mm_encoder_outputs``, it has ``get_image_features``, the processor gives a 4-D
``pixel_values`` with one entry per picture and no other image inputs, and the
encoder returns one feature tensor per picture (LLaVA and LLaVA-like models).

Mllama (LLaVA-CoT's own architecture) reads its pictures through cross-attention
layers instead, which keep the keys and values of the picture in the KV cache. For
it the cache holds, per picture, those keys and values of every cross-attention
layer, computed by the model itself in one short forward pass (the picture and one
``<|image|>`` token) the first time the picture is seen. Later calls get a KV cache
whose cross-attention layers already hold them, row by row, and no pixels: the
vision tower does not run again. Rows with at most one picture each (rows without
one, beside rows with one, get zeros that their mask makes add nothing); anything else
(and Idefics3's tiled 5-D pixels) passes through unchanged.

A forward hook on the vision tower counts its calls in :attr:`encoder_calls`, and
:attr:`images_encoded` counts pictures encoded, for tests and benchmarks.
"""

from __future__ import annotations

import inspect
import logging
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from langchain_llava_cot.backends.transformers.prefix_cache import cache_argument
from langchain_llava_cot.images import image_key

__all__ = [
    "ImageFeatureCache",
    "cross_attention_layers",
    "find_vision_tower",
    "image_token_id",
]

logger = logging.getLogger(__name__)

_TOWER_NAMES = ("vision_tower", "vision_model", "vision_encoder", "visual")
_IMAGE_INPUTS = (
    "pixel_values",
    "pixel_attention_mask",
    "image_sizes",
    "aspect_ratio_ids",
    "aspect_ratio_mask",
)


def find_vision_tower(model: Any) -> Any | None:
    """The model's vision encoder module (the shortest-named match), or None."""
    found = [
        (name.count("."), module)
        for name, module in model.named_modules()
        if name.rsplit(".", 1)[-1] in _TOWER_NAMES
    ]
    return min(found, key=lambda item: item[0])[1] if found else None


class ImageFeatureCache:
    """Image features by image content, for one model.

    Args:
        model: The loaded vision-language model (not modified, except for a forward
            hook on its vision tower that only counts calls; :meth:`close` removes it).
        max_images: Most distinct pictures kept; 0 turns caching off.
    """

    def __init__(self, model: Any, *, max_images: int = 64) -> None:
        if max_images < 0:
            msg = f"max_images must be >= 0 (0 turns the image cache off), got {max_images}."
            raise ValueError(msg)
        self._model = model
        self._max_images = max_images
        self._features: OrderedDict[str, Any] = OrderedDict()
        self.encoder_calls = 0
        """Forward calls of the vision tower since this cache was made."""
        self.images_encoded = 0
        """Pictures this cache encoded (cache misses)."""
        self._cross_layers = cross_attention_layers(model)
        self._image_token = image_token_id(model) or 0
        self.supported = max_images > 0 and (bool(self._cross_layers) or _supports_encoder_outputs(model))
        """Whether this model's features can be cached; if not, inputs pass through."""
        tower = find_vision_tower(model)
        self._hook = tower.register_forward_hook(self._count) if tower is not None else None

    def _count(self, *_: Any) -> None:
        self.encoder_calls += 1

    def close(self) -> None:
        """Remove the counting hook and drop the cached features."""
        if self._hook is not None:
            self._hook.remove()
            self._hook = None
        self._features.clear()

    def __len__(self) -> int:
        return len(self._features)

    def apply(self, inputs: Any, images: Sequence[bytes]) -> dict[str, Any]:
        """Model inputs with ``pixel_values`` replaced by cached features where possible.

        Args:
            inputs: The processor's output for a batch (a mapping of tensors).
            images: The encoded bytes of every picture in the batch, in the order the
                processor saw them (row by row).

        Returns:
            Keyword arguments for ``forward`` or ``generate``.
        """
        kwargs = dict(inputs)
        keys = self._encoded_keys(kwargs, images)
        if keys is None:
            return kwargs
        if self._cross_layers:
            kwargs[cache_argument(self._model)] = self._cross_attention_cache(keys)
            for name in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask"):
                kwargs.pop(name, None)
        else:
            features = [self._features[key] for key in keys if key is not None]
            del kwargs["pixel_values"]
            kwargs["mm_encoder_outputs"] = {"image": _as_output(features)}
        self.touch([key for key in keys if key is not None])
        return kwargs

    def store(self, inputs: Any, images: Sequence[bytes]) -> None:
        """Encode the pictures of ``inputs`` not cached yet, in one call, without building model inputs.

        For callers that read a batch's token ids and masks now and ask for the
        features later (:meth:`apply` for one prompt, or Mllama's
        :meth:`cross_attention_states`).
        """
        keys = self._encoded_keys(inputs, images)
        if keys is not None:
            self.touch([key for key in keys if key is not None])

    def _encoded_keys(self, inputs: Any, images: Sequence[bytes]) -> list[str | None] | None:
        """The batch's picture keys, new pictures encoded; None where the cache does not apply.

        Mllama: one key per batch row (None for a row without a picture); other models:
        one per picture. Callers touch the keys only after reading the features, so a batch with more
        pictures than the bound cannot evict its own before they are read.
        """
        pixels = inputs.get("pixel_values")
        if not self.supported or pixels is None:
            return None
        if self._cross_layers:
            row_keys = self._row_keys(inputs, pixels, images)
            if row_keys is not None:
                self._encode_missing_cross_attention(row_keys, inputs)
            return row_keys
        if not self._fits(inputs, pixels, images):
            return None
        keys: list[str | None] = [image_key(image) for image in images]
        self._encode_missing(keys, pixels)
        return keys

    def _row_keys(self, inputs: Any, pixels: Any, images: Sequence[bytes]) -> list[str | None] | None:
        """Mllama: each batch row's picture key, None for a row without one; None if not one each at most.

        Rows without a picture (text beside pictures in one batch: the processor gives
        them blank pixels) get zeros later, which their all-zero mask makes add
        nothing, so a text row reads as it would alone.
        """
        needed = ("aspect_ratio_ids", "aspect_ratio_mask", "cross_attention_mask")
        if pixels.dim() != 6 or pixels.shape[1] != 1 or any(inputs.get(name) is None for name in needed):
            return None
        pictured = inputs["cross_attention_mask"].flatten(1).any(dim=1).tolist()
        if len(pictured) != pixels.shape[0] or sum(pictured) != len(images):
            return None
        found = iter(image_key(image) for image in images)
        return [next(found) if seen else None for seen in pictured]

    def _encode_missing_cross_attention(self, keys: list[str | None], kwargs: Any) -> None:
        """Run the model once over each new picture and one image token; keep its cross-attention KV."""
        missing = self._missing(keys)
        if not missing:
            return
        import torch
        from transformers import DynamicCache

        rows = list(missing.values())
        cache = DynamicCache(config=self._model.config)
        with torch.inference_mode():
            self._model(
                input_ids=torch.full((len(rows), 1), self._image_token, device=self._model.device),
                pixel_values=kwargs["pixel_values"][rows],
                aspect_ratio_ids=kwargs["aspect_ratio_ids"][rows],
                aspect_ratio_mask=kwargs["aspect_ratio_mask"][rows],
                cross_attention_mask=torch.ones_like(kwargs["cross_attention_mask"][rows, :1]),
                **{cache_argument(self._model): cache},
                use_cache=True,
                logits_to_keep=1,
            )
        layers: Any = cache.layers
        for row, key in enumerate(missing):
            self._features[key] = tuple(
                (layers[layer].keys[row : row + 1].clone(), layers[layer].values[row : row + 1].clone())
                for layer in self._cross_layers
            )
        self.images_encoded += len(missing)

    def holds(self, key: str) -> bool:
        """Whether the picture with content key ``key`` is cached."""
        return key in self._features

    def cross_attention_states(self, keys: Sequence[str | None]) -> list[tuple[Any, Any]]:
        """Mllama: per cross-attention layer, the (keys, values) of row ``i``'s picture ``keys[i]``.

        A row without a picture (None) gets zeros: with its cross-attention mask all
        zeros, the layer then adds nothing to it, as if skipped. Every named picture
        must be cached (:meth:`holds`).
        """
        import torch

        template = next((self._features[key] for key in keys if key is not None), None)
        if template is None:
            msg = "cross_attention_states needs at least one row with a picture."
            raise ValueError(msg)
        layers = []
        for position in range(len(self._cross_layers)):
            # One contiguous copy per row, as the model's own pass would write: attention
            # kernels read them at every decoding step.
            layers.append(
                tuple(
                    torch.cat(
                        [
                            self._features[key][position][part]
                            if key is not None
                            else torch.zeros_like(template[position][part])
                            for key in keys
                        ]
                    )
                    for part in (0, 1)
                )
            )
        return layers  # type: ignore[return-value]

    def _cross_attention_cache(self, keys: list[str | None]) -> Any:
        """A ``DynamicCache`` whose cross-attention layers hold each row's picture (None: zeros)."""
        from transformers import DynamicCache

        cache = DynamicCache(config=self._model.config)
        for layer, (keys_states, values) in zip(self._cross_layers, self.cross_attention_states(keys)):
            cache.update(keys_states, values, layer)
        return cache

    def _missing(self, keys: Sequence[str | None]) -> dict[str, int]:
        """Each key not cached yet, with the batch row of its first picture (None: no picture)."""
        missing: dict[str, int] = {}
        for index, key in enumerate(keys):
            if key is not None and key not in self._features and key not in missing:
                missing[key] = index
        return missing

    def touch(self, keys: list[str]) -> None:
        """Mark ``keys`` as just used (those held) and evict the oldest beyond the bound."""
        for key in keys:
            if key in self._features:
                self._features.move_to_end(key)
        self._evict()

    def _fits(self, kwargs: dict[str, Any], pixels: Any, images: Sequence[bytes]) -> bool:
        """Whether ``pixels`` holds exactly one entry per picture and nothing else is needed."""
        others = [name for name in _IMAGE_INPUTS if name != "pixel_values" and kwargs.get(name) is not None]
        return not others and pixels.dim() == 4 and pixels.shape[0] == len(images)

    def _encode_missing(self, keys: Sequence[str | None], pixels: Any) -> None:
        """Encode, in one call, each picture whose key is not cached yet."""
        missing = self._missing(keys)
        if not missing:
            return
        import torch

        with torch.inference_mode():
            output = self._model.get_image_features(
                pixel_values=pixels[list(missing.values())], return_dict=True
            )
        per_image = _split(output.pooler_output, len(missing))
        for key, features in zip(missing, per_image):
            self._features[key] = features
        self.images_encoded += len(missing)

    def _evict(self) -> None:
        while len(self._features) > self._max_images:
            self._features.popitem(last=False)


def image_token_id(model: Any) -> int | None:
    """The id of the token that stands for a picture in the model's prompts, if it has one."""
    config = model.config
    for name in ("image_token_id", "image_token_index"):
        value = getattr(config, name, None)
        if isinstance(value, int):
            return value
    return None


def cross_attention_layers(model: Any) -> tuple[int, ...]:
    """The indices of the text model's cross-attention layers (Mllama); empty for other models."""
    config: Any = getattr(model, "config", None)
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    return tuple(getattr(text, "cross_attention_layers", None) or ())


def _supports_encoder_outputs(model: Any) -> bool:
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return False
    return "mm_encoder_outputs" in parameters and callable(getattr(model, "get_image_features", None))


def _split(pooled: Any, count: int) -> list[Any]:
    """One feature tensor per picture from what ``get_image_features`` pooled."""
    per_image = list(pooled)
    if len(per_image) != count:
        msg = (
            f"The image encoder returned {len(per_image)} feature entries for {count} pictures; "
            "this model's features cannot be cached. Pass max_cached_images=0."
        )
        raise ValueError(msg)
    return per_image


def _as_output(features: list[Any]) -> Any:
    from transformers.modeling_outputs import BaseModelOutputWithPooling

    # Models that pool each picture separately put a list of tensors here; the output
    # class annotates a single tensor.
    return BaseModelOutputWithPooling(pooler_output=features)  # type: ignore[arg-type]
