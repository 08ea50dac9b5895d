import inspect

import pytest

from langchain_llava_cot.backends.transformers import BackendSettings, TransformersBackend


def test_the_constructor_and_from_loaded_share_one_set_of_defaults() -> None:
    signature = inspect.signature(TransformersBackend.__init__).parameters
    for name, value in vars(BackendSettings()).items():
        assert signature[name].default == value


def test_a_misspelt_or_impossible_setting_says_what_to_do() -> None:
    with pytest.raises(TypeError, match="share_prefil; the settings are batch_window, .*share_prefill"):
        TransformersBackend.from_loaded(object(), object(), model_name="m", share_prefil=False)
    with pytest.raises(ValueError, match="max_batch_rows must be at least 1, got 0"):
        BackendSettings.of(max_batch_rows=0)
    assert BackendSettings.of(share_prefill=False) == BackendSettings(share_prefill=False)
