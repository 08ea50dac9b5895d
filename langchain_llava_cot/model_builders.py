"""Build tiny, randomly initialised vision-language models on disk, offline.

Tests, examples and training scripts need a real model folder that loads through the
ordinary ``AutoProcessor`` / ``AutoModelForImageTextToText`` path, without a model hub.
:func:`build_tiny_vlm` makes one in a few seconds:

1. train a byte-level BPE tokenizer on a small corpus (``tokenizers``), with the chat
   tokens of Llama 3 (``<|begin_of_text|>``, ``<|start_header_id|>``, ``<|eot_id|>`` ...)
   and the architecture's image token(s) as special tokens, and the eight stage tags
   (``<SUMMARY>`` ... ``</CONCLUSION>``) as single *non-special* added tokens, so each
   tag is one token and decoding with ``skip_special_tokens=True`` keeps them as text;
2. wrap it in a fast tokenizer with ``padding_side="left"`` given to the constructor
   (set later, it is not saved) and a Llama-3.2-Vision-shaped chat template;
3. build the architecture's image processor and processor, and the model from a small
   config with seeded random weights;
4. ``save_pretrained`` everything (safetensors) with a generation config whose EOS is
   ``<|eot_id|>``.

Architectures:

- ``"llava"``: CLIP vision tower + Llama text model; ``<image>`` expands to one token
  per patch (``(image_size // patch_size) ** 2``).
- ``"mllama"``: Llama-3.2-Vision, the architecture of LLaVA-CoT itself: one tile
  (``image_tiles`` for more), cross-attention layers, a single ``<|image|>`` token per image.
- ``"idefics3"``: SigLIP-like vision tower + Llama text model; ``<image>`` expands to
  ``(image_size // patch_size) ** 2 / 4`` tokens between ``<fake_token_around_image>``
  and ``<global-img>`` markers (no image splitting).

Qwen2-VL is not offered: with transformers 5.23, ``Qwen2VLProcessor`` has a
``video_processor`` part, which ``AutoProcessor.from_pretrained`` loads as
``Qwen2VLVideoProcessor``; its module imports ``torchvision.transforms.v2`` at import
time (``ModuleNotFoundError: No module named 'torchvision'``) and, unlike the image
processors, video processors have no PIL fallback. No CPU torchvision build is
installable here, so a Qwen2-VL folder cannot be loaded.

:func:`add_score_head` turns a saved image-text model into an image-reading reward model
with a random score head, the way vLLM and
:class:`~langchain_llava_cot.reward_models.ImageRewardModelJudge` load one.

>>> path = build_tiny_vlm(tmp_path / "tiny", arch="mllama")  # doctest: +SKIP
>>> AutoModelForImageTextToText.from_pretrained(path)  # doctest: +SKIP
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

__all__ = [
    "ARCHITECTURES",
    "STAGE_TAGS",
    "add_score_head",
    "build_tiny_vlm",
    "chat_template",
    "default_corpus",
]

ARCHITECTURES: tuple[str, ...] = ("llava", "mllama", "idefics3")
"""The architectures :func:`build_tiny_vlm` can build."""

STAGE_TAGS: tuple[str, ...] = tuple(
    tag for name in ("SUMMARY", "CAPTION", "REASONING", "CONCLUSION") for tag in (f"<{name}>", f"</{name}>")
)
"""The eight stage tags, each a single token of the built tokenizer."""

BOS, EOS, EOT, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>", "<|finetune_right_pad_id|>"
_CHAT_TOKENS = (BOS, EOS, "<|start_header_id|>", "<|end_header_id|>", EOT, PAD, "<|python_tag|>")

_IDEFICS3_TOKENS = (
    "<image>",
    "<fake_token_around_image>",
    "<global-img>",
    "<end_of_utterance>",
    *(f"<row_{i}_col_{j}>" for i in range(1, 7) for j in range(1, 7)),
)
_IMAGE_TOKENS: dict[str, tuple[str, ...]] = {
    "llava": ("<image>",),
    "mllama": ("<|image|>",),
    "idefics3": _IDEFICS3_TOKENS,
}


def chat_template(image_token: str) -> str:
    r"""A Llama-3.2-Vision-shaped chat template that writes ``image_token`` per image.

    One user turn with one image renders as::

        <|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>question<|eot_id|>
        <|start_header_id|>assistant<|end_header_id|>\n\n

    (without the line break after ``<|eot_id|>``). Message content may be a string or a
    list of ``{"type": "image"}`` / ``{"type": "text", "text": ...}`` items.
    """
    return (
        "{{- bos_token }}"
        "{%- for message in messages %}"
        "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' }}"
        "{%- if message['content'] is string %}{{- message['content'] }}"
        "{%- else %}{%- for item in message['content'] %}"
        "{%- if item['type'] == 'image' %}{{- '" + image_token + "' }}"
        "{%- elif item['type'] == 'text' %}{{- item['text'] }}{%- endif %}"
        "{%- endfor %}{%- endif %}"
        "{{- '<|eot_id|>' }}"
        "{%- endfor %}"
        "{%- if add_generation_prompt %}"
        "{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}"
        "{%- endif %}"
    )


def default_corpus(size: int = 400, seed: int = 0) -> list[str]:
    """A few hundred sentences about shapes, colours and questions, in the stage format."""
    rng = random.Random(seed)
    colours = ["red", "green", "blue", "yellow", "purple", "orange", "black", "white"]
    shapes = ["circle", "square", "triangle", "star", "cube", "sphere", "cylinder"]
    places = ["left", "right", "top", "bottom", "centre", "corner"]
    sentences = []
    for _ in range(size):
        colour, other = rng.sample(colours, 2)
        shape, other_shape = rng.sample(shapes, 2)
        count = rng.randint(0, 9)
        place = rng.choice(places)
        sentences.append(
            rng.choice(
                [
                    f"How many {colour} {shape}s are in the image?",
                    f"What colour is the {shape} on the {place}?",
                    f"Is the {colour} {shape} left of the {other} {other_shape}?",
                    f"<SUMMARY> I will count the {colour} {shape}s and answer. </SUMMARY>",
                    f"<CAPTION> The image shows {count} {colour} {shape}s near the {place}. </CAPTION>",
                    f"<REASONING> {count} {shape}s; the {other} one is a {other_shape}. </REASONING>",
                    f"<CONCLUSION> {count} </CONCLUSION>",
                    f"The better response is {rng.choice([1, 2])}.",
                    f"A {colour} {shape} sits at the {place}, next to a {other} {other_shape}.",
                ]
            )
        )
    return sentences


def build_tiny_vlm(
    path: str | Path,
    arch: str = "llava",
    *,
    corpus: Iterable[str] | None = None,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    image_size: int = 64,
    patch_size: int = 8,
    vision_hidden_size: int = 32,
    vision_layers: int = 2,
    max_position_embeddings: int = 1024,
    image_tiles: int = 1,
    seed: int = 0,
) -> Path:
    """Build a tiny random VLM of ``arch`` and save it, loadable with the Auto classes.

    Args:
        path: Folder to write (created if needed).
        arch: One of :data:`ARCHITECTURES`.
        corpus: Text to train the tokenizer on; :func:`default_corpus` when None.
        vocab_size: Target size of the BPE vocabulary (special tokens included).
        hidden_size: Width of the text model.
        num_layers: Number of text decoder layers.
        num_heads: Attention heads of the text model (and of the vision tower).
        intermediate_size: MLP width of the text model; ``4 * hidden_size`` when None.
        image_size: Side of the square images the vision tower reads, in pixels.
        patch_size: Side of a vision patch, in pixels.
        vision_hidden_size: Width of the vision tower.
        vision_layers: Number of vision encoder layers.
        max_position_embeddings: Longest sequence the text model accepts.
        image_tiles: Mllama only: most tiles of ``image_size`` a picture is cut into.
            Wide or tall pictures take several; every picture is padded to this many,
            as Llama 3.2 Vision pads to 4.
        seed: Seed of the random weights.

    Returns:
        The folder, ready for ``AutoProcessor.from_pretrained`` and
        ``AutoModelForImageTextToText.from_pretrained``.
    """
    if arch not in ARCHITECTURES:
        msg = f"Unknown arch {arch!r}. Use one of {', '.join(ARCHITECTURES)}."
        raise ValueError(msg)
    if image_size % patch_size:
        msg = f"image_size ({image_size}) must be a multiple of patch_size ({patch_size})."
        raise ValueError(msg)
    if image_tiles < 1 or (image_tiles > 1 and arch != "mllama"):
        msg = f"image_tiles must be 1, or more for arch='mllama' only; got {image_tiles} for {arch!r}."
        raise ValueError(msg)
    if arch == "mllama" and num_layers < 2:
        msg = (
            f"arch='mllama' needs num_layers >= 2 (a self-attention layer before its "
            f"cross-attention layer), got {num_layers}."
        )
        raise ValueError(msg)
    import torch
    from transformers import AutoModelForImageTextToText, GenerationConfig

    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    tokenizer = _build_tokenizer(arch, corpus, vocab_size)
    text = _text_config(
        tokenizer,
        hidden_size=hidden_size,
        num_layers=num_layers,
        num_heads=num_heads,
        intermediate_size=intermediate_size or 4 * hidden_size,
        max_position_embeddings=max_position_embeddings,
    )
    sizes = {"image_size": image_size, "patch_size": patch_size, "tiles": image_tiles}
    vision = {"hidden_size": vision_hidden_size, "layers": vision_layers, "heads": num_heads}
    config, processor = _ARCH_BUILDERS[arch](tokenizer, text, vision, sizes)

    torch.manual_seed(seed)
    model = AutoModelForImageTextToText.from_config(config)
    _open_gates(model)
    model.eval()
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.convert_tokens_to_ids(BOS),
        eos_token_id=tokenizer.convert_tokens_to_ids(EOT),
        pad_token_id=tokenizer.convert_tokens_to_ids(PAD),
    )
    model.save_pretrained(path, safe_serialization=True)
    processor.save_pretrained(path)
    return path


def add_score_head(model: str | Path, path: str | Path, *, num_labels: int = 1, seed: int = 0) -> Path:
    """Save the image-text model in ``model`` as a reward model with a random score head.

    The weights lose the language-model head and gain ``language_model.score.weight``
    (``num_labels`` x the text model's width, seeded), the name vLLM's classification
    adapter loads (``--runner pooling --convert classify``); ``AutoModel`` loads the rest.
    The config says ``num_labels`` at its top and in ``text_config`` (vLLM reads the
    latter); every other file (processor, tokenizer, chat template) is copied as it is.
    Training would give the head its meaning; a random one is enough to test the plumbing.
    """
    import json
    import shutil

    import torch
    from safetensors.torch import load_file, save_file

    source, out = Path(model), Path(path)
    out.mkdir(parents=True, exist_ok=True)
    for file in source.iterdir():
        if file.is_file() and file.suffix != ".safetensors" and file.name != "config.json":
            shutil.copy(file, out / file.name)
    weights: dict[str, Any] = {}
    for file in sorted(source.glob("*.safetensors")):
        weights.update(load_file(file))
    weights = {key: value for key, value in weights.items() if not key.endswith("lm_head.weight")}
    config = json.loads((source / "config.json").read_text())
    names = {str(i): f"LABEL_{i}" for i in range(num_labels)}
    labels: dict[str, Any] = {"id2label": names, "label2id": {name: int(i) for i, name in names.items()}}
    config.update(num_labels=num_labels, **labels)
    config["text_config"].update(num_labels=num_labels, **labels)
    generator = torch.Generator().manual_seed(seed)
    width = config["text_config"]["hidden_size"]
    weights["language_model.score.weight"] = torch.randn(num_labels, width, generator=generator) / width**0.5
    save_file(weights, out / "model.safetensors", metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return out


def _open_gates(model: Any) -> None:
    """Open Mllama's cross-attention gates, which start at zero (tanh(0): the picture adds nothing).

    Trained models have learned them; a random model with closed gates would be blind
    to its pictures, and tests of how pictures are read could not fail.
    """
    import torch

    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("cross_attn_attn_gate", "cross_attn_mlp_gate")):
                parameter.fill_(1.0)


def _build_tokenizer(arch: str, corpus: Iterable[str] | None, vocab_size: int) -> Any:
    """Train a byte-level BPE on ``corpus`` and wrap it in a left-padding fast tokenizer."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = [*_CHAT_TOKENS, *_IMAGE_TOKENS[arch]]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=max(vocab_size - len(STAGE_TAGS), len(specials) + 300),
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    bpe.train_from_iterator(_lines(corpus), trainer=trainer)
    bpe.add_tokens([AddedToken(tag, special=False, normalized=False) for tag in STAGE_TAGS])

    extra = {"image_token": "<|image|>" if arch == "mllama" else "<image>"}
    return PreTrainedTokenizerFast(
        tokenizer_object=bpe,
        bos_token=BOS,
        eos_token=EOT,
        pad_token=PAD,
        padding_side="left",
        extra_special_tokens=extra,
        chat_template=chat_template(extra["image_token"]),
        model_max_length=1_000_000,
    )


def _lines(corpus: Iterable[str] | None) -> Iterator[str]:
    """The corpus, plus the chat and stage words every model needs to spell."""
    lines = default_corpus() if corpus is None else corpus
    return itertools.chain(lines, ["user assistant system", "The better response is 1 2"])


def _text_config(tokenizer: Any, **sizes: int) -> dict[str, Any]:
    """Keyword arguments of a small Llama-style text config for ``tokenizer``."""
    return {
        "vocab_size": len(tokenizer),
        "hidden_size": sizes["hidden_size"],
        "intermediate_size": sizes["intermediate_size"],
        "num_hidden_layers": sizes["num_layers"],
        "num_attention_heads": sizes["num_heads"],
        "num_key_value_heads": sizes["num_heads"],
        "max_position_embeddings": sizes["max_position_embeddings"],
        "bos_token_id": tokenizer.convert_tokens_to_ids(BOS),
        "eos_token_id": tokenizer.convert_tokens_to_ids(EOT),
        "pad_token_id": tokenizer.convert_tokens_to_ids(PAD),
        "tie_word_embeddings": False,
    }


def _llava(tokenizer: Any, text: dict, vision: dict, sizes: dict) -> tuple[Any, Any]:
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaProcessor
    from transformers.models.llava.image_processing_pil_llava import LlavaImageProcessorPil

    image_size, patch_size = sizes["image_size"], sizes["patch_size"]
    num_patches = (image_size // patch_size) ** 2
    # LlavaConfig maps image_token_id to image_token_index through attribute_map, which its
    # dataclass signature does not show.
    config = LlavaConfig(  # type: ignore[call-arg]
        vision_config=CLIPVisionConfig(
            **_vision_tower(vision, image_size, patch_size), projection_dim=vision["hidden_size"]
        ),
        text_config=LlamaConfig(**text),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        vision_feature_select_strategy="default",
        vision_feature_layer=-1,
        image_seq_length=num_patches,
    )
    image_processor = LlavaImageProcessorPil(
        size={"height": image_size, "width": image_size},
        crop_size={"height": image_size, "width": image_size},
        do_center_crop=False,
    )
    processor = LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=patch_size,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=tokenizer.chat_template,
    )
    return config, processor


def _cross_attention_layer(layers: int) -> list[int]:
    """Where the one cross-attention layer goes.

    Between self-attention layers when there are three or more, as in Llama 3.2 Vision,
    so what it writes reaches later layers; else last (``build_tiny_vlm`` asks for two at
    least). Never first: transformers' cache measures the prompt's length on layer 0.
    """
    return [layers // 2] if layers >= 3 else [layers - 1]


def _mllama(tokenizer: Any, text: dict, vision: dict, sizes: dict) -> tuple[Any, Any]:
    from transformers import MllamaConfig, MllamaProcessor, MllamaTextConfig, MllamaVisionConfig
    from transformers.models.mllama.image_processing_pil_mllama import MllamaImageProcessorPil

    image_size, tiles = sizes["image_size"], sizes["tiles"]
    layers = text["num_hidden_layers"]
    intermediate = [max(0, vision["layers"] - 2)]
    config = MllamaConfig(
        vision_config=MllamaVisionConfig(
            hidden_size=vision["hidden_size"],
            intermediate_size=4 * vision["hidden_size"],
            num_hidden_layers=vision["layers"],
            num_global_layers=1,
            attention_heads=vision["heads"],
            vision_output_dim=vision["hidden_size"] * (len(intermediate) + 1),
            image_size=image_size,
            patch_size=sizes["patch_size"],
            max_num_tiles=tiles,
            supported_aspect_ratios=[
                [w, h] for w in range(1, tiles + 1) for h in range(1, tiles + 1) if w * h <= tiles
            ],
            intermediate_layers_indices=intermediate,
        ),
        text_config=MllamaTextConfig(**text, cross_attention_layers=_cross_attention_layer(layers)),
        image_token_index=tokenizer.convert_tokens_to_ids("<|image|>"),
    )
    image_processor = MllamaImageProcessorPil(
        size={"height": image_size, "width": image_size}, max_image_tiles=tiles
    )
    processor = MllamaProcessor(
        image_processor=image_processor, tokenizer=tokenizer, chat_template=tokenizer.chat_template
    )
    return config, processor


def _idefics3(tokenizer: Any, text: dict, vision: dict, sizes: dict) -> tuple[Any, Any]:
    from transformers import Idefics3Config, Idefics3Processor, Idefics3VisionConfig, LlamaConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    image_size, patch_size, scale = sizes["image_size"], sizes["patch_size"], 2
    if (image_size // patch_size) % scale:
        msg = f"idefics3 needs image_size // patch_size to be even; got {image_size // patch_size}."
        raise ValueError(msg)
    # Idefics3Config.__post_init__ takes pad_token_id from **kwargs, which its dataclass
    # signature does not show.
    config = Idefics3Config(  # type: ignore[call-arg]
        vision_config=Idefics3VisionConfig(**_vision_tower(vision, image_size, patch_size)),
        text_config=LlamaConfig(**text),
        image_token_id=tokenizer.convert_tokens_to_ids("<image>"),
        scale_factor=scale,
        pad_token_id=text["pad_token_id"],
    )
    image_processor = Idefics3ImageProcessorPil(
        size={"longest_edge": image_size},
        max_image_size={"longest_edge": image_size},
        do_image_splitting=False,
    )
    processor = Idefics3Processor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        image_seq_len=(image_size // patch_size) ** 2 // scale**2,
        chat_template=tokenizer.chat_template,
    )
    return config, processor


_ARCH_BUILDERS = {"llava": _llava, "mllama": _mllama, "idefics3": _idefics3}


def _vision_tower(vision: dict[str, Any], image_size: int, patch_size: int) -> dict[str, Any]:
    """The vision-tower sizes every architecture's vision config shares."""
    return {
        "hidden_size": vision["hidden_size"],
        "intermediate_size": 4 * vision["hidden_size"],
        "num_hidden_layers": vision["layers"],
        "num_attention_heads": vision["heads"],
        "image_size": image_size,
        "patch_size": patch_size,
    }
