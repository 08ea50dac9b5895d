"""model_builders without building a model: tags, template, corpus and argument checks."""

import pytest

from langchain_llava_cot.model_builders import (
    ARCHITECTURES,
    STAGE_TAGS,
    build_tiny_vlm,
    chat_template,
    default_corpus,
)
from langchain_llava_cot.stages import STAGES


def test_stage_tags_are_the_protocol_tags() -> None:
    assert STAGE_TAGS == tuple(tag for s in STAGES for tag in (s.open_tag, s.close_tag))


def test_chat_template_renders_the_llama_vision_shape() -> None:
    import jinja2

    template = jinja2.Environment().from_string(chat_template("<|image|>"))
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "How many?"}]}]
    rendered = template.render(messages=messages, add_generation_prompt=True, bos_token="<|begin_of_text|>")
    assert rendered == (
        "<|begin_of_text|><|start_header_id|>user<|end_header_id|>\n\n<|image|>How many?<|eot_id|>"
        "<|start_header_id|>assistant<|end_header_id|>\n\n"
    )


def test_default_corpus_is_deterministic() -> None:
    assert default_corpus(seed=3) == default_corpus(seed=3)
    assert len(default_corpus()) == 400


@pytest.mark.parametrize(
    ("arch", "kwargs", "match"),
    [
        ("qwen2_vl", {}, "Unknown arch"),
        ("llava", {"image_size": 60}, "multiple of patch_size"),
        ("mllama", {"num_layers": 1}, "num_layers >= 2"),
        ("llava", {"image_tiles": 2}, "image_tiles"),
    ],
)
def test_bad_arguments_fail_before_any_work(tmp_path, arch, kwargs, match) -> None:
    with pytest.raises(ValueError, match=match):
        build_tiny_vlm(tmp_path / "model", arch, **kwargs)
    assert not (tmp_path / "model").exists()
    assert "llava" in ARCHITECTURES
