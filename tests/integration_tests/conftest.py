"""Tiny vision-language models built offline, once per test session."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from langchain_llava_cot.model_builders import build_tiny_vlm  # noqa: E402

ARCHES = ("llava", "mllama", "idefics3")


def _build(tmp_path_factory: pytest.TempPathFactory, arch: str) -> Path:
    return build_tiny_vlm(tmp_path_factory.mktemp(f"tiny-{arch}"), arch=arch, seed=0)


@pytest.fixture(scope="session")
def tiny_llava_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory, "llava")


@pytest.fixture(scope="session")
def tiny_mllama_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Three layers put its cross-attention layer in the middle, as in Llama 3.2 Vision,
    # so what that layer makes of each position reaches the next layer's keys and values.
    return build_tiny_vlm(tmp_path_factory.mktemp("tiny-mllama"), arch="mllama", num_layers=3, seed=0)


@pytest.fixture(scope="session")
def tiny_idefics3_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _build(tmp_path_factory, "idefics3")


@pytest.fixture(scope="session", params=ARCHES)
def tiny_vlm_path(request: pytest.FixtureRequest) -> Path:
    """Each tiny architecture in turn."""
    return request.getfixturevalue(f"tiny_{request.param}_path")
