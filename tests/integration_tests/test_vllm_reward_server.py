"""Reward models served by a real vLLM (its CPU build, the servers lane) as judges, through the pooling API.

Two servers, built here and started once for the module:

- an *outcome* reward model that reads pictures: the bundled demo LLaVA with a random score
  head (:func:`~langchain_llava_cot.model_builders.add_score_head`), served with
  ``--runner pooling --convert classify``;
- a *process* reward model: a 2-layer ``LlamaForSequenceClassification`` made here on the demo
  tokenizer with a ``<step>`` token (head dimension 64: vLLM's CPU attention refuses 16), served
  with ``--pooler-config '{"task": "token_classify", "tok_pooling_type": "STEP", "step_tag_id": ...}'``.

Random heads make the scores meaningless, so each test checks them against the same weights
run in-process with transformers, and checks the plumbing: one request per judge step, the
picture sent where the model reads it, every strategy that takes scores.
"""

from __future__ import annotations

import asyncio
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import torch
from PIL import Image
from servers import DEMO_MESSAGES, STAGE_LIMITS, free_port, running_servers
from transformers import AutoModel, AutoTokenizer, LlamaConfig, LlamaForSequenceClassification

from langchain_llava_cot import ChatLlavaCoT, ServedProcessRewardJudge, ServedRewardJudge
from langchain_llava_cot._calls import drive
from langchain_llava_cot.backends.openai import ModelNotServedError, ServerError
from langchain_llava_cot.backends.transformers import TransformersBackend
from langchain_llava_cot.conversation import Conversation, Turn
from langchain_llava_cot.demo import DEMO_MODEL_PATH, DEMO_QUESTION, EXAMPLE_IMAGE
from langchain_llava_cot.judges import JudgeTask, StageJudges, reward_text
from langchain_llava_cot.model_builders import add_score_head
from langchain_llava_cot.reward_models import ImageRewardModelJudge, load_score_head
from langchain_llava_cot.stages import Stage

VLLM_PYTHON = Path(__file__).parents[2] / ".venv-vllm" / "bin" / "python"
STEP = "<step>"

pytestmark = [
    pytest.mark.skipif(not VLLM_PYTHON.exists(), reason="the real-server lane: make test-servers"),
    pytest.mark.timeout(3600),  # a slow start counts against the first test
]


def _png(colour: str) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buffer, format="PNG")
    return buffer.getvalue()


PICTURE = EXAMPLE_IMAGE.read_bytes()
CAPTIONS = (
    "2 objects: small red square at top left; large red square at middle.",
    "1 object: a blue circle.",
)
REASONINGS = (
    "Count red square: yes 1. That is 1.",
    "There are 2 objects. Count red square: yes 1; yes 2. That is 2.",
)


def task(stage: Stage, candidates: tuple[str, ...], picture: bytes = PICTURE) -> JudgeTask:
    conversation = Conversation((Turn("user", DEMO_QUESTION, (picture,)),))
    return JudgeTask(conversation, stage, {Stage.SUMMARY: "Count the red squares."}, candidates)


def build_process_model(folder: Path) -> Path:
    """A 2-layer LlamaForSequenceClassification on the demo tokenizer, with a ``<step>`` token."""
    tokenizer = AutoTokenizer.from_pretrained(DEMO_MODEL_PATH)
    tokenizer.add_special_tokens({"additional_special_tokens": [STEP]})
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
        num_attention_heads=2, num_key_value_heads=2, head_dim=64, num_labels=1, max_position_embeddings=1024,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )  # fmt: skip
    LlamaForSequenceClassification(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def vllm_command(folder: Path, name: str, port: int, *extra: str) -> list[str]:
    return [
        str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(folder),
        "--served-model-name", name, "--host", "127.0.0.1", "--port", str(port), "--max-model-len", "1024",
        "--dtype", "float32", "--enforce-eager", "--runner", "pooling", *extra,
    ]  # fmt: skip


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("reward-models")
    return {
        "outcome": add_score_head(DEMO_MODEL_PATH, folder / "outcome", seed=0),
        "process": build_process_model(folder / "process"),
    }


@pytest.fixture(scope="module")
def servers(models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """Both reward models served on 127.0.0.1; yields their base URLs."""
    folder = tmp_path_factory.mktemp("vllm-rewards")
    env = {
        **os.environ, "HF_HUB_OFFLINE": "1", "VLLM_TARGET_DEVICE": "cpu", "VLLM_CPU_KVCACHE_SPACE": "1",
        "VLLM_NO_USAGE_STATS": "1", "VLLM_CACHE_ROOT": str(folder / "cache"),
    }  # fmt: skip
    step_id = AutoTokenizer.from_pretrained(models["process"]).convert_tokens_to_ids(STEP)
    pooler = {"task": "token_classify", "tok_pooling_type": "STEP", "step_tag_id": step_id}
    commands = {
        "outcome": vllm_command(models["outcome"], "outcome", free_port(), "--convert", "classify"),
        "process": vllm_command(
            models["process"], "process", free_port(), "--pooler-config", json.dumps(pooler)
        ),
    }
    urls = {
        name: f"http://127.0.0.1:{command[command.index('--port') + 1]}" for name, command in commands.items()
    }
    started = time.monotonic()
    specs = [(commands[name], f"{urls[name]}/health", folder / f"{name}.log") for name in commands]
    with running_servers(specs, env=env, timeout=2400):  # 30-60 s on 2 idle cores; 25 min seen under load
        print(f"\nvLLM reward servers ready {time.monotonic() - started:.0f} s after start")
        yield urls


def pooling_requests(monkeypatch: pytest.MonkeyPatch) -> list[dict]:
    """From now on, the body of every ``/pooling`` request an httpx client sends."""
    sent: list[dict] = []
    send = httpx.Client.send

    def recorded(client: httpx.Client, request: httpx.Request, **options: object) -> httpx.Response:
        if request.url.path.endswith("/pooling"):
            sent.append(json.loads(request.content))
        return send(client, request, **options)

    monkeypatch.setattr(httpx.Client, "send", recorded)
    return sent


# -- scores, against the same weights in-process ------------------------------------------------


def test_outcome_scores_are_the_models_last_token_logits(
    servers: dict[str, str], models: dict[str, Path]
) -> None:
    judge = ServedRewardJudge(servers["outcome"] + "/v1", "outcome")  # a /v1 suffix is dropped
    asked = task(Stage.CAPTION, CAPTIONS)
    served = drive(judge.score(asked, None), None)
    tokenizer, model = (
        AutoTokenizer.from_pretrained(models["outcome"]),
        AutoModel.from_pretrained(models["outcome"]),
    )
    head = load_score_head(models["outcome"])
    with torch.inference_mode():
        local = [
            head(
                model(**tokenizer(reward_text(asked, i), return_tensors="pt")).last_hidden_state[0, -1]
            ).item()
            for i in range(2)
        ]
    assert served.scores == pytest.approx(local, abs=1e-3) and served.prompt_tokens > 0


def test_a_model_that_reads_pictures_gets_the_picture_with_each_candidate(
    servers: dict[str, str], models: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    sent = pooling_requests(monkeypatch)
    judge = ServedRewardJudge(servers["outcome"], "outcome", images=True)
    asked = task(Stage.CAPTION, CAPTIONS)
    served = drive(judge.score(asked, None), None).scores
    local = drive(ImageRewardModelJudge(models["outcome"]).score(asked, None), None).scores
    assert served == pytest.approx(local, abs=1e-3)  # the same picture, template and head
    assert len(sent) == 2 and all(body["messages"][0]["content"][0]["type"] == "image_url" for body in sent)
    elsewhere = drive(judge.score(task(Stage.CAPTION, CAPTIONS, _png("blue")), None), None).scores
    assert all(abs(a - b) > 1e-4 for a, b in zip(served, elsewhere))  # the picture is read


def test_process_scores_are_the_logits_at_each_step_tag(
    servers: dict[str, str], models: dict[str, Path]
) -> None:
    judge = ServedProcessRewardJudge(servers["process"], "process", step_tag=STEP, aggregate="min")
    asked = task(Stage.REASONING, REASONINGS)
    verdict = drive(judge.score(asked, None), None)
    assert [len(steps) for steps in verdict.step_scores] == [2, 3]
    split = ["There are 2 objects.", "Count red square: yes 1; yes 2.", "That is 2."]
    assert [s.text for s in verdict.step_scores[1]] == split
    tokenizer = AutoTokenizer.from_pretrained(models["process"])
    model = LlamaForSequenceClassification.from_pretrained(models["process"]).eval()
    tag = tokenizer.convert_tokens_to_ids(STEP)
    for index, steps in enumerate(verdict.step_scores):
        ids = tokenizer(judge._input(asked, index), return_tensors="pt").input_ids
        with torch.inference_mode():
            logits = model.score(model.model(input_ids=ids).last_hidden_state)[0, :, 0]
        local = logits[ids[0] == tag].tolist()
        assert [s.score for s in steps] == pytest.approx(local, abs=1e-3)
        assert verdict.scores[index] == pytest.approx(min(local), abs=1e-3)


# -- in every strategy that takes scores, one request per judge step ---------------------------------


@pytest.fixture(scope="module")
def sampler() -> TransformersBackend:
    return TransformersBackend(DEMO_MODEL_PATH)


@pytest.mark.parametrize("kind", ["outcome", "process"])
@pytest.mark.parametrize(
    "options",
    [
        {"strategy": "stage_beam"},
        {"strategy": "best_of_n"},
        {"strategy": "vote"},
        {"strategy": "retrace", "max_retraces": 1},
        {"strategy": "stage_beam", "adaptive": True, "confidence": 0.0},
    ],
    ids=["stage_beam", "best_of_n", "vote", "retrace", "adaptive"],
)
def test_a_served_reward_model_judges_every_strategy_with_one_request_a_step(
    servers: dict[str, str],
    sampler: TransformersBackend,
    kind: str,
    options: dict,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if kind == "outcome":
        judge: ServedRewardJudge = ServedRewardJudge(servers["outcome"], "outcome")
    else:
        judge = ServedProcessRewardJudge(servers["process"], "process", step_tag=STEP, aggregate="prod")
    sent = pooling_requests(monkeypatch)
    llm = ChatLlavaCoT(
        backend=sampler, candidates=4, judge=judge, seed=0, max_stage_tokens=STAGE_LIMITS, **options
    )
    record = llm.invoke(DEMO_MESSAGES).response_metadata["llava_cot"]
    scored = [step for step in record["steps"] if step["scores"]]
    assert scored and record["chosen"]["conclusion"]
    assert sent and all(1 <= len(body["input"]) <= 4 and "messages" not in body for body in sent)  # text
    if options.get("adaptive"):  # a first round, then (unless it was enough) all four: one request each
        assert len(scored) <= len(sent) <= 2 * len(scored)
    elif options["strategy"] in ("stage_beam", "best_of_n"):
        assert len(sent) == len(scored)  # one request for each step the judge scored
    if kind == "process":
        assert all(step["step_scores"] for step in scored)


def test_per_stage_with_the_picture_and_async(servers: dict[str, str], sampler: TransformersBackend) -> None:
    captions = ServedRewardJudge(servers["outcome"], "outcome", images=True)
    reasoning = ServedProcessRewardJudge(servers["process"], "process", step_tag=STEP)
    judge = StageJudges({"caption": captions, "reasoning": reasoning}, default="likelihood")
    llm = ChatLlavaCoT(backend=sampler, candidates=4, judge=judge, seed=0, max_stage_tokens=STAGE_LIMITS)
    message = asyncio.run(llm.ainvoke(DEMO_MESSAGES))
    steps = {s["stage"]: s for s in message.response_metadata["llava_cot"]["steps"]}
    assert (
        "step_scores" in steps["reasoning"] or len({c["text"] for c in steps["reasoning"]["candidates"]}) == 1
    )
    assert message.content.strip()


# -- errors that say what to do --------------------------------------------------------------------


def test_the_wrong_kind_of_server_or_model_name_is_a_clear_error(servers: dict[str, str]) -> None:
    asked = task(Stage.REASONING, REASONINGS)
    process_on_outcome = ServedProcessRewardJudge(servers["outcome"], "outcome", step_tag=STEP)
    with pytest.raises(ServerError, match="token_classify"):
        drive(process_on_outcome.score(asked, None), None)
    with pytest.raises(ModelNotServedError, match="does not serve model 'nope'"):
        drive(ServedRewardJudge(servers["outcome"], "nope").score(asked, None), None)


def test_judge_rank_ranks_a_served_reward_model(servers: dict[str, str], tmp_path: Path) -> None:
    script = Path(__file__).parents[2] / "benchmarks" / "judge_rank.py"
    out = tmp_path / "rank.json"
    served = ["--served-reward", servers["outcome"], "--served-model", "outcome", "--served-images"]
    command = [
        sys.executable,
        str(script),
        "--questions",
        "12",
        "--candidates",
        "4",
        *served,
        "--out",
        str(out),
    ]
    subprocess.run(
        command, check=True, capture_output=True, timeout=600, env={**os.environ, "HF_HUB_OFFLINE": "1"}
    )
    rows = json.loads(out.read_text())["results"]
    assert rows, "no mixed candidate set in 12 questions"
    for stage in {row["stage"] for row in rows}:
        judges = {row["judge"]: row for row in rows if row["stage"] == stage}
        assert "served_reward" in judges and judges["served_reward"]["within_question_auc"] is not None
        assert judges["served_reward"]["mixed_sets"] == judges["likelihood"]["mixed_sets"]
