"""Where the bundled demo model lives, known to the engine without importing the demo package.

>>> DEMO_MODEL_PATH.name
'model'
"""

from __future__ import annotations

from pathlib import Path

__all__ = ["DEMO_MODEL_PATH"]

DEMO_MODEL_PATH: Path = Path(__file__).resolve().parent / "demo" / "model"
"""Folder of the bundled model (safetensors, tokenizer, processor, chat template)."""
