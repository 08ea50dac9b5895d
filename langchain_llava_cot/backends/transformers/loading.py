"""Loading a vision-language model with transformers: where from, whether it is one, what it supports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

_INSTALL = "Install the extra: pip install 'langchain-llava-cot[transformers]'."


def import_transformers() -> Any:
    """The ``transformers`` module, or an ImportError that says how to install it."""
    try:
        import transformers
    except ImportError as e:
        msg = f"TransformersBackend needs torch and transformers. {_INSTALL}"
        raise ImportError(msg) from e
    return transformers


def resolve_source(model: str | Path) -> str:
    """A local folder as a string, or a hub id; a missing local path fails here."""
    path = Path(model).expanduser()
    if path.exists():
        if not path.is_dir():
            msg = f"Model path {str(path)!r} is a file; pass the folder that holds config.json."
            raise ValueError(msg)
        if not (path / "config.json").is_file():
            msg = f"Model folder {str(path)!r} has no config.json; pass a folder written by save_pretrained."
            raise ValueError(msg)
        return str(path)
    text = str(model)
    if isinstance(model, Path) or _looks_local(text):
        msg = (
            f"Model path {text!r} does not exist: pass an existing folder written by "
            "save_pretrained, or a Hugging Face model id such as 'Xkev/Llama-3.2V-11B-cot'."
        )
        raise FileNotFoundError(msg)
    return text


def _looks_local(text: str) -> bool:
    return text.startswith(("/", "./", "../", "~", ".\\")) or "\\" in text or text.count("/") > 1


def check_is_vlm(source: str, *, trust_remote_code: bool) -> None:
    """Fail before loading weights when ``source`` is unavailable or not a vision-language model."""
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(source, trust_remote_code=trust_remote_code)
    except OSError as e:
        msg = (
            f"Model {source!r} is not a local folder and could not be loaded from the Hugging Face "
            f"hub or its local cache ({e}). Offline (HF_HUB_OFFLINE=1), download it first with "
            "`hf download <id>` on a connected machine, or pass a local folder."
        )
        raise OSError(msg) from e
    auto_map = getattr(config, "auto_map", None) or {}
    if trust_remote_code and "AutoModelForImageTextToText" in auto_map:
        return
    if config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        architectures = ", ".join(getattr(config, "architectures", None) or []) or "unknown class"
        msg = (
            f"Model {source!r} is a {config.model_type!r} model ({architectures}), not a "
            "vision-language model: AutoModelForImageTextToText cannot load it. Use an "
            "image-text-to-text model such as 'Xkev/Llama-3.2V-11B-cot' (or build a tiny one with "
            "langchain_llava_cot.model_builders.build_tiny_vlm); serve a text-only model through "
            "an OpenAI-compatible server or a LangChain chat model backend instead."
        )
        raise ValueError(msg)


def is_encoder_decoder(model: Any) -> bool:
    """Whether the model is an encoder-decoder (its prompts cannot be read once and reused)."""
    return bool(getattr(getattr(model, "config", None), "is_encoder_decoder", False))


def has_plain_kv_cache(model: Any) -> bool:
    """Whether every layer of the model's ``DynamicCache`` is full attention (croppable by slicing)."""
    from transformers import DynamicCache
    from transformers.cache_utils import DynamicLayer

    layers = DynamicCache(config=model.config).layers
    return bool(layers) and all(type(layer) is DynamicLayer for layer in layers)


def rng_devices(model: Any) -> list:
    """The CUDA device whose random state a seeded call must fork, if the model is on one."""
    device = getattr(model, "device", None)
    return [device] if device is not None and device.type == "cuda" else []


def name_of(model: Any) -> str:
    """A loaded model's name: where it was loaded from, else its class."""
    return getattr(model, "name_or_path", None) or type(model).__name__
