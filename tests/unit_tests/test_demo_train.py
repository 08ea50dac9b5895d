"""A short run of the demo model's training: both stages, the record, a model that loads."""

import json
from dataclasses import replace

from langchain_llava_cot.demo.train import DEFAULT_CONFIG, train_demo

TINY = replace(
    DEFAULT_CONFIG,
    vocab_size=400,
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    vision_hidden_size=32,
    vision_layers=1,
    vision_steps=3,
    vision_pictures=600,
    answers=60,
    judge_pairs=8,
    verifier_rows=8,
    off_domain=8,
    tokens_per_batch=2_000,
    warmup_steps=1,
    tool_questions=0,
    tool_others=0,
    structured=4,
    vision_checks=4,
    corpus_examples=100,
)


def test_a_short_run_trains_both_stages_and_records_them(tmp_path):
    from langchain_llava_cot.backends.transformers import TransformersBackend

    out = train_demo(tmp_path / "model", steps=4, config=TINY, log_every=1)
    record = json.loads((out / "training.json").read_text())
    assert record["steps"] == 4 and record["vision"]["steps"] == 3 and record["threads"] == 1
    assert {"validation_free", "validation_novel", "validation_classic"} <= set(record["vision"])
    assert [phase["phase"] for phase in record["phases"]] == ["captions", "all"]
    assert record["tokens_seen"] > 0 and record["history"][0]["step"] == 1
    with TransformersBackend(out) as backend:
        assert backend.context_length is not None


def test_a_checkpoint_is_written_whole_and_training_goes_on_from_it(tmp_path):
    from transformers import AutoModelForImageTextToText, AutoProcessor

    from langchain_llava_cot.demo.train import _save_checkpoint

    out = train_demo(tmp_path / "model", steps=4, config=TINY, save_every=2)
    assert not (out / "checkpoint").exists()  # a finished run keeps only its final model
    model = AutoModelForImageTextToText.from_pretrained(out)
    _save_checkpoint(model, AutoProcessor.from_pretrained(out), tmp_path / "checkpoint", 3)
    assert json.loads((tmp_path / "checkpoint" / "checkpoint.json").read_text()) == {"steps": 3}
    assert not (tmp_path / "checkpoint.partial").exists()
    checkpoint = tmp_path / "checkpoint"
    again = train_demo(tmp_path / "again", steps=2, config=TINY, init=checkpoint, save_every=None)
    assert json.loads((again / "training.json").read_text())["steps"] == 2
    assert "vision" not in json.loads((again / "training.json").read_text())  # the tower as it was


def test_vision_steps_with_init_go_on_pretraining_the_tower(tmp_path):
    first = train_demo(tmp_path / "first", steps=2, config=TINY, save_every=None)
    again = train_demo(tmp_path / "again", steps=2, config=TINY, init=first, vision_steps=2, save_every=None)
    record = json.loads((again / "training.json").read_text())
    assert record["vision"]["steps"] == 2 and record["init_record"]["vision"]["steps"] == 3
