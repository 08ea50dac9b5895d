"""Convert the bundled demo model to GGUF for llama.cpp: the text model and its mmproj.

    python .ci/llama_cpp_convert.py LLAMA_CPP_SOURCE MODEL_DIR OUT_DIR

Writes ``OUT_DIR/text.gguf`` and ``OUT_DIR/mmproj.gguf`` with llama.cpp's own converters,
run in this process so that three things the demo model needs can be set first:

- its tokenizer is a byte-level BPE trained here, whose pre-tokenizer hash llama.cpp does
  not know: it is GPT-2's regex, so the text converter is told ``gpt-2``;
- ``convert_hf_to_gguf.py`` converts LLaVA's vision side only for Pixtral towers, so the
  CLIP tower and projector go through llama.cpp's LLaVA-1.5 converter
  (``tools/mtmd/legacy-models/convert_image_encoder_to_gguf.py``, projector type ``mlp``),
  with the model's own ``vision_feature_layer`` (the last layer, where LLaVA-1.5 uses the
  one before) and the processor's mean and std;
- that converter reads a transformers 4 ``CLIPVisionModel`` (``model.vision_model``); in
  transformers 5 the tower is the model itself, so it gets a wrapper with that attribute.
"""

from __future__ import annotations

import json
import runpy
import sys
import tempfile
from pathlib import Path


def convert_text(source: Path, model_dir: Path, out: Path) -> None:
    """The language model, with llama.cpp's ``convert_hf_to_gguf.py``: ``out/text.gguf``."""
    import conversion.base
    import conversion.llama

    for model_class in vars(conversion.base).values():
        if isinstance(model_class, type) and hasattr(model_class, "get_vocab_base_pre"):
            model_class.get_vocab_base_pre = lambda self, *args, **kwargs: "gpt-2"
    conversion.llama.LlamaModel.set_vocab = lambda self: self._set_vocab_gpt2()
    script = source / "convert_hf_to_gguf.py"
    sys.argv = [str(script), str(model_dir), "--outfile", str(out / "text.gguf"), "--outtype", "f32"]
    runpy.run_path(str(script), run_name="__main__")


def convert_vision(source: Path, model_dir: Path, out: Path) -> None:
    """The vision tower and projector, with the LLaVA-1.5 converter: ``out/mmproj.gguf``."""
    import torch
    import transformers

    vlm = transformers.AutoModelForImageTextToText.from_pretrained(model_dir)
    processor = transformers.AutoProcessor.from_pretrained(model_dir).image_processor

    class Tower(torch.nn.Module):
        def __init__(self, tower: torch.nn.Module) -> None:
            super().__init__()
            self.vision_model = tower

    with tempfile.TemporaryDirectory() as tmp:
        vlm.model.vision_tower.save_pretrained(tmp)
        config = json.loads(Path(tmp, "config.json").read_text())
        config["vision_feature_layer"] = vlm.config.vision_feature_layer
        Path(tmp, "config.json").write_text(json.dumps(config))
        projector = vlm.model.multi_modal_projector.state_dict()
        torch.save(
            {f"multi_modal_projector.{k}": v for k, v in projector.items()}, Path(tmp, "llava.projector")
        )
        transformers.CLIPVisionModel.from_pretrained = classmethod(
            lambda cls, path: Tower(vlm.model.vision_tower)
        )
        script = source / "tools" / "mtmd" / "legacy-models" / "convert_image_encoder_to_gguf.py"
        sys.argv = [
            str(script), "-m", tmp, "--llava-projector", f"{tmp}/llava.projector", "--projector-type", "mlp",
            "--output-dir", tmp, "--clip-model-is-vision", "--use-f32",
            "--image-mean", *map(str, processor.image_mean), "--image-std", *map(str, processor.image_std),
        ]  # fmt: skip
        runpy.run_path(str(script), run_name="__main__")
        Path(tmp, "mmproj-model-f32.gguf").replace(out / "mmproj.gguf")


if __name__ == "__main__":
    source, model_dir, out = (Path(arg).resolve() for arg in sys.argv[1:4])
    out.mkdir(parents=True, exist_ok=True)
    sys.path[:0] = [str(source / "gguf-py"), str(source)]  # llama.cpp's own gguf package and converters
    convert_vision(source, model_dir, out)
    convert_text(source, model_dir, out)
    print(f"wrote {out / 'text.gguf'} and {out / 'mmproj.gguf'}")
